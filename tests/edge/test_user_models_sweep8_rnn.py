"""``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` as a user exports them (multi-layer, bidirectional,
batch_first or not, initial states passed in, ``proj_size``) at a fixed sequence length with a
dynamic batch, one method per length bucket, and the refusal of a dynamic sequence length
with what to do; numpy runtime against eager torch in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export

BATCH = Dim("batch", min=1, max=8)
# torch.export notes that nn.RNNBase sets its _flat_weights during tracing (its own bookkeeping)
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self")


class Tagger(nn.Module):
    """A bidirectional 2-layer LSTM tagger (batch_first, ``proj_size``) with its initial states
    as inputs, returning the tags and the final states."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True, proj_size=3)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h, c) = self.lstm(x, (h0, c0))
        return self.head(y).log_softmax(-1), h, c


def test_bidirectional_two_layer_lstm_with_projections_and_initial_states() -> None:
    torch.manual_seed(84)
    def inputs(b: int) -> tuple[torch.Tensor, ...]:
        return torch.randn(b, 3, 6), torch.randn(4, b, 3), torch.randn(4, b, 8)
    check_model(Tagger(), inputs(2), ({0: BATCH}, {1: BATCH}, {1: BATCH}), others=(inputs(3),))


class SeqFirst(nn.Module):
    """A sequence-first bidirectional GRU encoder, a plain LSTM and a relu ``nn.RNN``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, num_layers=2, bidirectional=True)
        self.lstm = nn.LSTM(12, 5)
        self.rnn = nn.RNN(5, 5, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.gru(x)
        z, _ = self.rnn(self.lstm(y)[0])
        return z, h


def test_sequence_first_bidirectional_gru_lstm_and_relu_rnn() -> None:
    torch.manual_seed(85)
    check_model(SeqFirst(), (torch.randn(3, 2, 4),), ({1: BATCH},), others=((torch.randn(3, 5, 4),),))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(x)[0][:, -1])

    def short(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def test_one_method_per_length_bucket() -> None:
    torch.manual_seed(86)
    model = Classifier()
    prog = export(model, (torch.randn(2, 8, 4),), ({0: BATCH},), methods={"short": ((torch.randn(2, 3, 4),), ({0: BATCH},))})
    check_model(model, (torch.randn(3, 8, 4),), prog=prog)
    check_model(model, (torch.randn(1, 3, 4),), prog=prog, method="short")


def test_a_dynamic_sequence_length_is_refused_with_what_to_do() -> None:
    with pytest.raises(ExportError, match=r"nn.GRU: torch.export unrolls the recurrence.*fixed length"):
        export(Classifier(), (torch.randn(2, 8, 4),), ({0: BATCH, 1: Dim("steps", min=2, max=32)},))


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return self.gru(packed)[1][-1]

    def padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What the refusal suggests: the padded batch, each sequence's last real step."""
        y = self.gru(x)[0]
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, y.shape[-1])
        return torch.gather(y, 1, last).squeeze(1)


def test_packed_sequences_are_refused_and_the_padded_form_matches_them() -> None:
    torch.manual_seed(87)
    model = Packed().eval()
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    with pytest.raises(ExportError, match=r"packs its sequences.*padded batch"):
        export(model, (x, lengths))
    prog = export(model, None, methods={"padded": ((x, lengths), ({0: BATCH}, {0: BATCH}))})
    with torch.no_grad():
        ref = model(x, lengths)  # the packed run in eager torch
    got = prog.method("padded")(x.numpy(), lengths.numpy())
    assert abs(got - ref.numpy()).max() <= 1e-5 * abs(ref.numpy()).max()
