"""The notebooks run at the small size, and their committed outputs are what that run gives.

``notebooks/execute.py`` re-executes every notebook in place at the small size
(``BAYESCLV_NOTEBOOK_SMALL=1``); the slow test here executes each one once the same way
(it imports ``execute_notebook`` from that script), fails on any error, and compares the
outputs cell by cell with the committed ones (:func:`compare_notebooks`). A notebook whose
committed text no longer matches what its code prints fails, with the command to refresh it.

Comparison rules, and why:

* Same code cells (same number, same source) and, per cell, the same sequence of outputs:
  output type, stream name and set of MIME types (consecutive prints to one stream count as
  one output: how the kernel chunks them depends on timing).
* Images (``image/*``) by presence only: PNG bytes change with matplotlib and font versions.
  ``text/html`` is not compared: every HTML output here is a DataFrame, whose
  ``text/plain`` twin is compared.
* Text (streams, ``text/plain``, ``text/markdown``) after normalisation: memory addresses,
  temporary paths and timings (a number followed by ``s``, ``ms``, ``min`` or ``seconds``)
  are replaced by placeholders, and runs of spaces are collapsed (a pandas column widens
  when a number gains a digit). Then the text is split into numbers and the rest; the rest,
  which holds every verdict word (``OK``, ``WARNING``, ``not assessed``, ``True``) and
  every name, must be equal exactly.
* Numbers agree within ``max(RTOL * max(|a|, |b|), ulp)``, where ``ulp`` is one unit in the
  last printed decimal place of either, for numbers printed with decimals; integers (counts
  of divergences, customers, draws) get no ulp, so a small count must agree exactly.
  Why: at the small size the fits are MAP optimisations (deterministic) or seeded NUTS,
  and the simulations are seeded, so on the machine and environment that wrote the outputs
  they repeat exactly. Across machines, BLAS and compiler differences move a converged
  optimiser in its last digits (relative 1e-6 or less) and can flip the last printed digit
  of a rounded figure, which the one-ulp allowance covers (integers printed by rounding a
  continuous figure, such as 1,654 transactions, are covered by ``RTOL`` once they have
  four digits). ``RTOL = 1e-3`` is far above that noise and far below what a stale figure
  from another fit, size or seed differs by (percents). The short NUTS runs at the small
  size (notebook 04, 2 x 10 draws) are chaotic across machines; if they ever differ there,
  re-execute with ``notebooks/execute.py`` in that environment rather than loosen the
  tolerance for every figure.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
REFRESH = f"{Path(sys.executable).name} notebooks/execute.py"

#: Relative tolerance on numbers (see the module docstring).
RTOL = 1e-3

_spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)

_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x<addr>"),
    (re.compile(r"(/tmp|/var/folders|/private/var)/\S+"), "<tmp path>"),
    (re.compile(r"\d[\d,]*(\.\d+)?[ \t]*(s|ms|min|seconds)\b"), "<time>"),
    (re.compile(r"[ \t]+"), " "),
]
_NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_TEXT_MIME = ("text/plain", "text/markdown")


def normalise(text: str) -> str:
    """``text`` with memory addresses, temporary paths and timings replaced, spaces collapsed."""
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _split(text: str) -> tuple[list[str], list[str]]:
    """The numbers of ``text`` (as printed) and the text between them."""
    return _NUMBER.findall(text), _NUMBER.split(text)


def _value(token: str) -> tuple[float, float]:
    """A printed number and one unit in its last printed decimal place (0 for an integer:
    counts such as divergences must agree exactly)."""
    token = token.replace(",", "").replace("−", "-")
    mantissa = re.split(r"[eE]", token)[0]
    if "." not in mantissa:
        return float(token), 0.0
    decimals = len(mantissa.split(".")[1])
    exponent = int(re.split(r"[eE]", token)[1]) if re.search(r"[eE]", token) else 0
    return float(token), 10.0 ** (exponent - decimals)


def compare_text(committed: str, fresh: str, rtol: float = RTOL) -> str | None:
    """None if the two texts agree under the rules of the module docstring, else why not."""
    a, b = normalise(committed), normalise(fresh)
    (na, ta), (nb, tb) = _split(a), _split(b)
    if ta != tb:
        for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
            if x != y:
                return f"text differs: committed {x!r}, fresh {y!r} (after {i} numbers)"
        return f"text differs: committed {len(ta)} pieces, fresh {len(tb)}"
    for x, y in zip(na, nb, strict=True):
        (vx, ux), (vy, uy) = _value(x), _value(y)
        if abs(vx - vy) > max(rtol * max(abs(vx), abs(vy)), ux, uy) * (1 + 1e-9):
            return f"number differs: committed {x}, fresh {y}"
    return None


def _output_text(out) -> dict[str, str]:
    if out.get("output_type") == "stream":
        return {"stream": out.get("text", "")}
    data = out.get("data", {})
    return {m: data[m] if isinstance(data[m], str) else "".join(data[m])
            for m in _TEXT_MIME if m in data}


def _output_kind(out) -> tuple:
    kind = out.get("output_type")
    if kind == "stream":
        return (kind, out.get("name"))
    if kind == "error":
        return (kind, out.get("ename"))
    return (kind, tuple(sorted(out.get("data", {}))))


def _merge_streams(outputs) -> list:
    """``outputs`` with consecutive stream outputs of one name joined: how the kernel chunks
    a cell's printing depends on timing, not on the code."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + out.get("text", "")}
        else:
            merged.append(out)
    return merged


def compare_notebooks(committed, fresh, rtol: float = RTOL) -> list[str]:
    """Where the outputs of ``fresh`` (just executed) differ from ``committed``; [] if nowhere."""
    code_a = [c for c in committed.cells if c.cell_type == "code"]
    code_b = [c for c in fresh.cells if c.cell_type == "code"]
    if [c.source for c in code_a] != [c.source for c in code_b]:
        return ["the code cells differ"]
    problems = []
    for i, (ca, cb) in enumerate(zip(code_a, code_b, strict=True)):
        oa, ob = _merge_streams(ca.get("outputs", [])), _merge_streams(cb.get("outputs", []))
        kinds_a, kinds_b = [_output_kind(o) for o in oa], [_output_kind(o) for o in ob]
        if kinds_a != kinds_b:
            problems.append(f"code cell {i}: outputs {kinds_a} committed, {kinds_b} fresh")
            continue
        for j, (x, y) in enumerate(zip(oa, ob, strict=True)):
            tx, ty = _output_text(x), _output_text(y)
            for mime in tx:
                why = compare_text(tx[mime], ty[mime], rtol)
                if why:
                    problems.append(f"code cell {i}, output {j} ({mime}): {why}")
    return problems


# --------------------------------------------------------------------------- fast checks


def test_notebooks_are_present():
    assert len(NOTEBOOKS) >= 6, f"expected the six notebooks in {NOTEBOOK_DIR}, got {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_small_size_outputs_and_says_so(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    assert 'os.environ.get("BAYESCLV_NOTEBOOK_SMALL") == "1"' in code[0].source, (
        f"{path.name}: the first code cell must read the BAYESCLV_NOTEBOOK_SMALL size knob"
    )
    assert "small size" in nb.cells[0].source and "notebooks/execute.py" in nb.cells[0].source, (
        f"{path.name}: the first cell must say that the outputs are from the small size"
    )
    unexecuted = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were committed unexecuted"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].get('ename')}"
    timed = [i for i, c in enumerate(nb.cells) if "execution" in c.metadata]
    assert not timed, f"{path.name}: cells {timed} keep execution timings; run `{REFRESH}`"


# ------------------------------------------------------------------- the comparator itself


def _stream(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _result(text, **more):
    return nbformat.v4.new_output("execute_result", data={"text/plain": text, **more},
                                  execution_count=1)


def _nb(*outputs_per_cell):
    nb = nbformat.v4.new_notebook()
    for k, outputs in enumerate(outputs_per_cell):
        cell = nbformat.v4.new_code_cell(f"cell_{k}()")
        cell.outputs = list(outputs)
        nb.cells.append(cell)
    return nb


REPORT = ("Convergence: OK  (bgnbd, pooling=partial, sampler=pymc, 2 chains x 1000 draws)\n"
          "  R-hat max          1.004  (<= 1.01)\n  divergences            0  (<= 0)\n")


@pytest.mark.parametrize(("committed", "fresh"), [
    (REPORT, REPORT),
    (REPORT, REPORT.replace("1.004", "1.005")),              # the last printed digit
    (REPORT, REPORT.replace("1.004 ", "1.0041")),            # more digits, same figure
    ("Run at the small size in 310 s.\n<Figure at 0x55aa01>",  # a timing, an address
     "Run at the small size in 95 s.\n<Figure at 0x7f3a9c>"),
    ("written to /tmp/bayesclv-nb05-abc/clv.csv", "written to /tmp/bayesclv-nb05-x1/clv.csv"),
], ids=["same", "last-digit", "digits", "timing-address", "tmp-path"])
def test_comparator_accepts_what_may_change(committed, fresh):
    assert compare_text(committed, fresh) is None


@pytest.mark.parametrize("fresh", [
    REPORT.replace("OK", "WARNING"),                      # verdict word
    REPORT.replace("0  (<= 0)", "3  (<= 0)"),             # a count
    REPORT.replace("0  (<= 0)", "1  (<= 0)"),             # a count, by one
    REPORT.replace("1.004", "1.104"),                     # a figure beyond the tolerance
    REPORT.replace("1000 draws", "500 draws"),            # a size
    REPORT + "  problem: 3 divergent transitions\n",     # an extra line
], ids=["verdict", "count", "count-by-one", "figure", "size", "extra-line"])
def test_comparator_rejects_stale_text(fresh):
    assert compare_text(REPORT, fresh) is not None


def test_comparator_on_a_doctored_notebook():
    png = {"image/png": "iVBORw0KGgo="}
    committed = _nb([_stream(REPORT)], [_result("<Figure size 640x480 with 1 Axes>", **png)],
                    [nbformat.v4.new_output("display_data", data={
                        "text/markdown": "The verdict is **OK**: 0 divergences.",
                        "text/plain": "<IPython.core.display.Markdown object>"})])
    fresh = nbformat.reads(nbformat.writes(committed), as_version=4)
    fresh.cells[1].outputs[0].data["image/png"] = "AAAA"  # images by presence only
    assert compare_notebooks(committed, fresh) == []

    stale = nbformat.reads(nbformat.writes(committed), as_version=4)
    stale.cells[2].outputs[0].data["text/markdown"] = "The verdict is **WARNING**: 3 divergences."
    problems = compare_notebooks(stale, fresh)
    assert len(problems) == 1 and "code cell 2" in problems[0] and "WARNING" in problems[0]

    no_image = nbformat.reads(nbformat.writes(committed), as_version=4)
    del no_image.cells[1].outputs[0].data["image/png"]
    assert compare_notebooks(no_image, fresh) != []

    edited = nbformat.reads(nbformat.writes(committed), as_version=4)
    edited.cells[0].source = "cell_0(draws=500)"
    assert compare_notebooks(edited, fresh) == ["the code cells differ"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_comparator_catches_a_stale_figure_in_a_committed_notebook(path):
    committed = nbformat.read(path, as_version=4)
    assert compare_notebooks(committed, committed) == []
    stale = nbformat.reads(nbformat.writes(committed), as_version=4)
    # the last number printed by the notebook's prose (or any text output), made 5% larger
    for cell in reversed([c for c in stale.cells if c.cell_type == "code"]):
        outs = [o for o in cell.outputs if "text/markdown" in o.get("data", {})] or [
            o for o in cell.outputs if o.get("output_type") == "stream"]
        for out in outs:
            key = ("data", "text/markdown") if "data" in out else ("text",)
            text = out[key[0]][key[1]] if len(key) == 2 else out[key[0]]
            numbers = [m for m in _NUMBER.finditer(normalise(text)) if _value(m.group())[0]]
            if not numbers or numbers[-1].group() not in text:
                continue
            token = numbers[-1].group()
            value, ulp = _value(token)
            doctored = f"{value * 1.05 + 2 * ulp + (ulp == 0):.6g}"  # beyond any tolerance
            i = text.rindex(token)
            text = text[:i] + doctored + text[i + len(token):]
            if len(key) == 2:
                out[key[0]][key[1]] = text
            else:
                out[key[0]] = text
            break
        else:
            continue
        break
    else:
        pytest.fail(f"{path.name}: no printed number to doctor")
    assert compare_notebooks(stale, committed) != []


# ------------------------------------------------------------- execution and comparison


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_at_small_size_and_matches_committed_outputs(path, tmp_path):
    # A kernel of another environment would test another installation of bayesclv.
    problem = execute.kernel_problem()
    assert problem is None, problem
    committed = nbformat.read(path, as_version=4)
    fresh = execute.execute_notebook(path, workdir=tmp_path)  # raises on any cell error
    ran = [c for c in fresh.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in ran)
    problems = compare_notebooks(committed, fresh)
    assert not problems, (
        f"{path.name}: the committed outputs are not those the committed code produces at the "
        f"small size; run `{REFRESH}` and commit the notebook.\n  " + "\n  ".join(problems[:10])
    )
