"""The numbers and times quoted in README.md, protocols/README.md and docs/ are those of the recorded runs
(docs/numbers.json, written by ``python -m bioqmmm.run.docs_numbers --run ...``)."""

from __future__ import annotations

from bioqmmm.run import docs_numbers


def test_every_marked_number_in_the_pages_is_the_recorded_one():
    problems = docs_numbers.stale()
    assert not problems, "\n".join(problems) + "\nregenerate: python -m bioqmmm.run.docs_numbers --run NAME ..."


def test_pages_quote_the_shipped_examples():
    keys = {m["key"] for page in docs_numbers.pages() for m in docs_numbers.MARKER.finditer(page.read_text())}
    for name in ("quickstart", "prepare_1aki", "md", "pmf", "neb_gas", "tests"):
        assert f"{name}.wall" in keys
    assert {"pmf.barrier", "pmf.reaction", "md.mean_temperature", "neb_gas.barrier"} <= keys


def test_an_edited_number_or_an_unknown_key_is_caught(tmp_path, monkeypatch):
    record = docs_numbers.read_record()
    monkeypatch.setattr(docs_numbers, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    good = docs_numbers.render("pmf.barrier", record)
    page.write_text(f"barrier <!--n:pmf.barrier-->{good}<!--/n--> kJ/mol\n")
    assert docs_numbers.stale(record, [page]) == []
    edited = str(round(float(good.split()[0]) + 0.3, 1)) + good[len(good.split()[0]):]
    page.write_text(f"barrier <!--n:pmf.barrier-->{edited}<!--/n--> kJ/mol and <!--n:pmf.nonsense-->1<!--/n-->\n")
    problems = docs_numbers.stale(record, [page])
    assert len(problems) == 2 and "pmf.barrier: the page says" in problems[0] and "pmf.nonsense" in problems[1]
    page.write_text("written as `<!--n:pmf.barrier-->1.0 ± 0.1<!--/n-->` in a code span: an example, not a number\n")
    assert docs_numbers.stale(record, [page]) == []
    page.write_text(f"an unclosed <!--n:pmf.reaction-->7 and <!--n:pmf.barrier-->{good}<!--/n-->\n")
    assert docs_numbers.stale(record, [page]) == []  # the unclosed marker does not swallow the next one


def test_fresh_results_are_compared_within_the_stated_uncertainty():
    record = {"entries": {"pmf": {"numbers": {"barrier": {"value": 40.0, "uncertainty": 1.0},
                                              "reaction": {"value": 10.0, "uncertainty": 1.0}}}}}

    def result(barrier, reaction):
        return {"free_energy_barrier": {"value": barrier, "uncertainty": 1.0},
                "reaction_free_energy": {"value": reaction, "uncertainty": 1.0}}
    assert docs_numbers.compare("pmf", result(42.5, 10.0), record) == []  # within 2 * sqrt(2) = 2.83
    assert docs_numbers.compare("pmf", result(43.0, 10.0), record) == [
        "pmf.barrier: fresh 43, recorded 40 (allowed difference 2.83)"]


def test_times_are_quoted_to_two_figures():
    assert [docs_numbers.format_time(s) for s in (4.2, 38.6, 95, 150, 1500, 7300)] == [
        "4.2 s", "39 s", "95 s", "2.5 min", "25 min", "2 h"]
