import pytest
import torch

from kdlab.api import scheme
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.models import create_model
from kdlab.schemes.mutual import Cohort

from .conftest import FAST, params_grad


def _cohort(T=1.0):
    torch.manual_seed(0)
    return Cohort([create_model("cnn_tiny", 10, 1, 8), create_model("mlp_tiny", 10, 1, 8)], T=T)


def test_terms_are_per_peer_and_each_peer_learns_only_from_the_others_outputs(batch):
    c = _cohort()
    out, terms = c(batch)
    assert set(terms) == {"ce/peer0", "dml/peer0", "ce/peer1", "dml/peer1"}
    assert out.logits.shape == (len(batch), 10)
    # peer 0's distillation term moves peer 0 only: peer 1's outputs enter it detached
    terms["dml/peer0"].backward()
    assert params_grad(c.peers[0]) > 0
    assert params_grad(c.peers[1]) == 0


def test_a_peers_target_is_the_other_peer(batch):
    c = _cohort()
    before = float(c(batch)[1]["dml/peer0"].detach())
    with torch.no_grad():  # change peer 1 only: peer 0's distillation term must change
        for p in c.peers[1].parameters():
            p.add_(0.5 * torch.randn_like(p))
    after = float(c(batch)[1]["dml/peer0"].detach())
    assert after != pytest.approx(before)


def test_dml_is_zero_when_peers_agree(batch):
    torch.manual_seed(0)
    a = create_model("mlp_tiny", 10, 1, 8)
    b = create_model("mlp_tiny", 10, 1, 8)
    b.load_state_dict(a.state_dict())
    terms = Cohort([a, b])(batch)[1]
    assert float(terms["dml/peer0"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_mutual_trains_peers_of_different_architectures_and_deploys_the_best(digits, tmp_path):
    r = scheme("mutual", digits, epochs=2, seed=0, train=FAST, peers=["cnn_tiny", "mlp_tiny"], out=str(tmp_path / "m"))
    peers = r.extra["peers"]
    assert [p["model"] for p in peers] == ["cnn_tiny", "mlp_tiny"]
    best = max(range(2), key=lambda i: peers[i]["val_acc"])
    assert r.extra["deployed"] == best and r.best_val_acc == peers[best]["val_acc"]
    assert r.test["acc"] == pytest.approx(peers[best]["test_acc"])
    assert all(p["test_acc"] > 0.5 for p in peers)
    assert "val_acc/peer0" in r.history[-1] and "dml/peer1" in "".join(r.history[-1])
    # the run keeps the deployed peer: its best checkpoint is that peer at its best epoch
    from kdlab.models.load import load_model
    from kdlab.schemes._common import evaluate

    best, _ = load_model(tmp_path / "m" / "best")
    assert evaluate(best, digits)["acc"] == pytest.approx(peers[best_i := r.extra["deployed"]]["test_acc"])
    assert best_i == r.extra["deployed"]


def test_bad_cohorts(batch):
    with pytest.raises(ConfigError):
        Cohort([create_model("mlp_tiny", 10, 1, 8)])
    c = Cohort([create_model("mlp_tiny", 10, 1, 8), create_model("mlp_tiny", 5, 1, 8)])
    with pytest.raises(IncompatibleError, match="different numbers of classes"):
        c.prepare(batch, None)
