"""Per-attack partial records: an interrupted evaluation resumes at the first unfinished attack.

Each finished attack (a white-box column, an AutoAttack name, a black-box column, an eps-sweep
point, the honesty passes) is saved at once to ``FOLDER/<name>.json`` (atomically): its
per-example verdicts, its settings and the identity of what it was run on (the model: epoch,
model config and a SHA-256 of its variables; the test subset: its size and a SHA-256 of the
images and labels; the attack seed and batch size). A rerun reuses a saved attack only when
all of these are equal, and says so in one line; otherwise it says why and recomputes.
The folder is removed once the run's results are written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Optional

import numpy as np

from fosc_jax.rundir import integrity

FORMAT = 1


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of a test set's images and labels (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        h.update(f"{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def model_identity(classifier: Any) -> dict:
    """Epoch, model config and the SHA-256 of the variables of a Classifier."""
    model = classifier.config.get("model") if classifier.config is not None else None
    return dict(epoch=int(classifier.epoch),
                model=json.loads(model.to_json()) if model is not None else None,
                variables_sha256=integrity.tree_digest(classifier.variables))


def _bits(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in np.asarray(correct, bool))


def _unbits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8) == ord("1")


def _jsonable(value: Any) -> Any:
    """A JSON round trip, so a fresh and a reused value compare equal (tuples -> lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if isinstance(
        o, np.generic) else str(o)))


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{k}.")
            if found:
                return found
        elif a != b:
            shorten = lambda v: (str(v)[:12] + "...") if len(str(v)) > 16 else v  # noqa: E731
            return f"{prefix}{k}: {shorten(a)!r} -> {shorten(b)!r}"
    return ""


class PartialRecords:
    """Saves and reuses per-attack results in ``folder`` (None: compute only, save nothing).

    ``identity`` is what every saved attack must share with this evaluation; ``write``
    False (processes other than 0) reuses saved attacks but writes nothing.
    """

    def __init__(self, folder: Optional[str], identity: dict, write: bool = True,
                 log: Callable[[str], None] = print):
        self.folder, self.identity, self.write, self.log = folder, _jsonable(identity), write, log
        self.resumed: list[str] = []

    def _path(self, name: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join(self.folder, f"{safe}.json")

    def _load(self, name: str, settings: dict) -> Optional[dict]:
        path = self._path(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
            correct = _unbits(saved["correct"])
            if saved.get("format") != FORMAT or saved.get("name") != name:
                raise ValueError("another format")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            self.log(f"note: {path} is unreadable ({err}); {name} is computed afresh.")
            return None
        want = dict(identity=self.identity, settings=settings)
        have = dict(identity=saved.get("identity"), settings=saved.get("settings"))
        if have != want:
            self.log(f"note: {path} was computed with other settings "
                     f"({_first_difference(have, want)}); {name} is computed afresh.")
            return None
        return dict(correct=correct, extra=saved.get("extra"), seconds=saved.get("seconds"))

    def run(self, name: str, settings: dict,
            compute: Callable[[], tuple[np.ndarray, Any]]) -> tuple[np.ndarray, Any, float]:
        """(correct, extra, seconds) of attack ``name``: the saved result when one matches,
        else ``compute()`` -> (per-example correct, JSON-friendly extra), saved at once."""
        settings = _jsonable(settings)
        if self.folder is not None:
            saved = self._load(name, settings)
            if saved is not None:
                self.resumed.append(name)
                self.log(f"{name}: reused from {self._path(name)} (an interrupted evaluation "
                         "with the same model, data and settings)")
                return saved["correct"], saved["extra"], float(saved["seconds"])
        start = time.perf_counter()
        correct, extra = compute()
        seconds = time.perf_counter() - start
        correct, extra = np.asarray(correct, bool), _jsonable(extra)
        if self.folder is not None and self.write:
            os.makedirs(self.folder, exist_ok=True)
            integrity.atomic_write_text(self._path(name), json.dumps(dict(
                format=FORMAT, name=name, identity=self.identity, settings=settings,
                seconds=seconds, extra=extra, correct=_bits(correct))))
        return correct, extra, seconds

    def clear(self) -> None:
        """Remove the saved attacks (the run's results are written)."""
        if self.folder is not None and self.write and os.path.isdir(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["PartialRecords", "data_digest", "model_identity"]
