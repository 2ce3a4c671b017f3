"""The one objective parser: a method spec (plus α and T) → the run's list of methods.

Used by the API, the CLI, ``kdlab bench``, the schemes and ``kdlab init``. The rules:

- ``spec`` is a name (``"kd"``), a sum (``"at+kd"``) or a list of names and
  ``{"name": ..., **hyperparameters}`` entries. The supervised ``ce`` term is always first.
- Without α, every method keeps its paper defaults, weight included, and CE gets the weight the
  paper pairs with them (Hinton KD: 0.9·T²·KL + 0.1·CE; DKD, DIST, feature and relation
  methods: CE at 1; the smallest of the methods' pairings when several are combined).
- α (in [0, 1]) and T (> 0) apply to the response-family (logit) methods only: α becomes the
  weight of each of them and CE gets 1 − α; T becomes the temperature of each one that has a
  ``T``. Feature and relation methods keep their paper weights unless an entry sets ``weight``.
  An entry's own ``weight``/``T`` wins over α/T given in the same call.
- α or T that no method of the objective can take is an error naming the methods.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from kdlab.errors import ConfigError
from kdlab.methods import METHODS, hyperparameters

Spec = str | Sequence[str | Mapping[str, Any]]

# What `kdlab distill`, `kdlab.distill` and the schemes run when no method is named: Hinton KD at its
# paper weights scored best in the main job's regime (benchmarks/recipe.md).
DEFAULT_METHOD = "kd"


def _items(spec: Spec) -> list[dict[str, Any]]:
    raw: list[str | Mapping[str, Any]] = [s for s in spec.split("+")] if isinstance(spec, str) else list(spec)
    items: list[dict[str, Any]] = []
    for r in raw:
        if isinstance(r, str):
            if not r.strip():
                raise ConfigError(f"method spec {spec!r} has an empty name (write e.g. kd or at+kd)")
            items.append({"name": r.strip()})
        elif isinstance(r, Mapping) and isinstance(r.get("name"), str):
            items.append(dict(r))
        else:
            raise ConfigError(f"method entry {r!r}: give a name or a mapping with a 'name' key")
    if not items:
        raise ConfigError("the method spec is empty (write e.g. kd or at+kd)")
    for it in items:
        METHODS.get(it["name"])  # unknown name: one line with the nearest registered one
    return items


def family(name: str) -> str:
    return METHODS.get(name).family


def parse_objective(spec: Spec | None = None, *, alpha: float | None = None, T: float | None = None,
                    base: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The methods list of a run (``[{"name": "ce", "weight": w}, ...]``, CE first).

    spec: the user's method spec; None keeps ``base`` (a config's ``methods`` list), whose
          weights α and T then override, since flags come after the file.
    """
    if spec is None and base is None:
        raise ConfigError("no objective: give a method spec (e.g. kd) or a methods list")
    explicit = spec is not None  # entries of this call win over α/T; a base config's do not
    items = _items(spec) if spec is not None else [dict(m) for m in base or []]
    ce = [it for it in items if it["name"] == "ce"]
    rest = [it for it in items if it["name"] != "ce"]
    if len(ce) > 1:
        raise ConfigError("the objective lists 'ce' twice")
    response = [it for it in rest if family(it["name"]) == "response"]
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if not response:
            names = ", ".join(repr(it["name"]) for it in rest) or "none"
            raise ConfigError(f"alpha weighs response-family (logit) methods, but this objective has none ({names}); "
                              "set a feature or relation method's weight with its 'weight' hyperparameter")
        for it in response:
            if "weight" not in hyperparameters(it["name"]):
                raise ConfigError(f"alpha: method {it['name']!r} has no hyperparameter 'weight'; set its own terms' "
                                  f"weights instead (hyperparameters: {', '.join(hyperparameters(it['name']))})")
            if not (explicit and "weight" in it):
                it["weight"] = alpha
    if T is not None:
        if not T > 0:
            raise ConfigError(f"T (temperature) must be > 0, got {T}")
        takers = [it for it in response if "T" in hyperparameters(it["name"])]
        if not takers:
            names = ", ".join(repr(it["name"]) for it in rest) or "none"
            raise ConfigError(f"T is the temperature of response-family methods with a 'T' hyperparameter "
                              f"(kd, dkd, nkd, lskd, tfkd); none in this objective ({names})")
        for it in takers:
            if not (explicit and "T" in it):
                it["T"] = T
    head: dict[str, Any] = ce[0] if ce else {"name": "ce"}
    if alpha is not None and not (explicit and "weight" in head):
        head["weight"] = round(1.0 - alpha, 12)
    elif "weight" not in head:
        head["weight"] = min([METHODS.get(it["name"]).paper_ce for it in rest], default=1.0)
    return [head, *rest]
