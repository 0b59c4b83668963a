"""Every network family satisfies the contract of nas_jax.networks.base (no network is run)."""
import pytest

from nas_jax import networks
from nas_jax.networks.base import ContinuousRelaxation, NetworkFamily, WeightSharing


@pytest.mark.parametrize("name", networks.known_families())
def test_family_satisfies_the_protocols(name):
  fam = networks.family(name)
  assert isinstance(fam, NetworkFamily)
  assert fam.name == name
  assert fam.tasks == networks.served_tasks(name)  # declared without importing the networks
  if fam.supernet is not None:
    assert isinstance(fam.supernet, WeightSharing)
  if fam.continuous is not None:
    assert isinstance(fam.continuous, ContinuousRelaxation)
    assert len(fam.continuous.op_names) >= 2
  assert networks.family(name) is fam  # one object per family


def test_image_families_have_their_capabilities():
  for name in ("nasnet", "nb201"):
    fam = networks.family(name)
    assert fam.tasks == ("images",)
    assert isinstance(fam.supernet, WeightSharing) and isinstance(fam.continuous, ContinuousRelaxation)
  # The protocol checks can fail: an object without the methods is none of them.
  assert not isinstance(object(), NetworkFamily)
  assert not isinstance(object(), WeightSharing) and not isinstance(object(), ContinuousRelaxation)


def test_configs_and_unknown_names_are_checked():
  nasnet = networks.family("nasnet")
  cfg = nasnet.supernet.config(num_classes=3, init_channels=4, layers=3)
  assert (cfg.num_classes, cfg.init_channels, cfg.layers) == (3, 4, 3)
  assert nasnet.continuous.weights_shape(cfg) == (2, 2 + 3 + 4 + 5 + 6, 5)
  nb201 = networks.family("nb201")
  assert nb201.supernet.config(layers=2).layers == 2
  assert nb201.continuous.weights_shape(nb201.continuous.config(layers=2)) == (6, 5)
  assert nb201.continuous.op_names[0] == "none"
  with pytest.raises(ValueError, match=r"unknown .*SupernetConfig field\(s\) \['channels'\]"):
    nasnet.supernet.config(channels=4)
  with pytest.raises(ValueError, match="no networks for space 'nope'"):
    networks.family("nope")
