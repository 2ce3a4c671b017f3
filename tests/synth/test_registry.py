import kdlab.synth
from kdlab.synth import SYNTHS, create_synth, list_synths
from tests.test_registry import _modules_of, _registrant_modules


def test_every_synth_module_registers_a_synthesizer():
    assert _modules_of(SYNTHS) == _registrant_modules(kdlab.synth)
    assert set(list_synths()) == {"dafl", "dfad", "zskt", "deepinv"}


def test_paper_objectives_and_defaults():
    assert create_synth("dfad").student_method == {"name": "mae"}
    assert create_synth("zskt").student_method == {"name": "kd", "T": 1.0}
    z, f = create_synth("zskt"), create_synth("dfad")
    assert (z.student_steps, z.loss, z.nz, f.student_steps, f.loss, f.nz) == (10, "kl", 100, 5, "l1", 256)
    assert create_synth("deepinv").needs_bn and not create_synth("dafl").needs_bn
