"""students.json, students.md and students.png: the candidates, the budget and the front."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..rundir import atomic_write, write_json, write_text


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def status_text(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['stage']} failed: {r['reason']}"
    mark = " ★" if r.get("on_front") else ""
    return (r.get("verdict") or "measured") + mark


def candidate_lines(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    p = cfg["percentile"]
    lines = [f"| candidate | family | params M | MACs M | {p} ms | band ms | p99 ms | CoV | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ok = r["status"] == "ok"
        lat = r.get("latency") or {}
        band = f"{r['band'][0]:.3f}–{r['band'][1]:.3f}" if ok else "—"
        lines.append(f"| {r['label']} | {r['family']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e6:.1f} | "
                     f"{_ms(r.get('ms'))} | {band} | {_ms(lat.get('p99_ms'))} | "
                     f"{100 * lat['cov']:.0f} % | {status_text(r)} |" if ok else
                     f"| {r['label']} | {r['family']} | {_num(r.get('params'), 1e6, 2)} | "
                     f"{_num(r.get('macs'), 1e6, 1)} | — | — | — | — | {status_text(r)} |")
    return lines


def _num(x: float | None, scale: float, digits: int) -> str:
    return "—" if x is None else f"{x / scale:.{digits}f}"


def distilled_lines(result: dict[str, Any]) -> list[str]:
    p = result["config"]["percentile"]
    lines = [f"| student | val acc | test acc | deployed {p} ms | band ms | verdict | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in result["rows"] if "deployed" in r):
        d = r["deployed"]
        if d["status"] != "ok":
            lines.append(f"| {r['label']} | {_pct(r['val_acc'])} | {_pct(r['test_acc'])} | — | — | "
                         f"{d['stage']} failed: {d['reason']} | {r['train_s']} |")
            continue
        mark = " ★" if d.get("on_front") else ""
        lines.append(f"| {r['label']} | {_pct(r['val_acc'])} | {_pct(r['test_acc'])} | {_ms(d['ms'])} | "
                     f"{d['band'][0]:.3f}–{d['band'][1]:.3f} | {d['verdict']}{mark} | {r['train_s']} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    budget = f"{cfg['budget_ms']} ms at {cfg['percentile']}" if cfg["budget_ms"] else "none given"
    where = env.get("gpu") or env.get("cpu") or cfg["device"]
    lines = [f"# {result['recipe']}: students for a latency budget", "",
             f"{cfg['backend']} {cfg['precision']} on {cfg['device']} ({where}, threads {cfg['threads']}), batch "
             f"{cfg['batch']}, {result['channels']}×{result['img_size']}×{result['img_size']} input; budget "
             f"{budget}. Each candidate timed for {cfg['timing']['duration_s']} s in {cfg['rounds']} interleaved "
             f"rounds; the band is the spread of its per-round {cfg['percentile']}, at least ±5 %.", "",
             "## Candidates, untrained (as built, exported and run on the target)", "", *candidate_lines(result), "",
             "★: on the Pareto front (no other candidate is both faster and larger in MACs)."]
    if any("deployed" in r for r in result["rows"]):
        t = result["teacher"] or {}
        lines += ["", "## Distilled, exported, timed again", "",
                  f"Teacher {t.get('model', '?')} trained once ({_pct(t.get('test_acc') or t.get('val_acc'))}), "
                  "reused by every student.", "", *distilled_lines(result), "",
                  "★: on the accuracy–latency front. The chosen student has the best validation accuracy among "
                  "those that fit (test accuracy is reported, not used to choose)."]
    if result["chosen"]:
        verdict = f"Chosen: **{result['chosen']}**; recipe `{result['written_recipe']}`, ready for `pipeline`."
    else:
        verdict = "No student chosen: " + ("none fits the budget." if cfg["budget_ms"] else "no --budget-ms given.")
    s = result["seconds"]
    lines += ["", verdict, "", f"Seconds: {s['measure']} building and exporting, {s['measure_and_time']} with the "
              f"timing, {s['total']} in all."]
    return "\n".join(lines) + "\n"


def plot(path: Path, result: dict[str, Any]) -> None:
    """Accuracy (distilled) or MACs (untrained) against latency: every point labelled, front and budget drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    trained = [r for r in result["rows"] if r.get("deployed", {}).get("status") == "ok"]
    if trained:
        points = [(r["deployed"]["ms"], 100 * r["val_acc"], r["label"], r["deployed"].get("on_front")) for r in trained]
        ylabel, title = "validation accuracy (%)", "accuracy vs deployed latency"
    else:
        points = [(r["ms"], r["macs"] / 1e6, r["label"], r.get("on_front")) for r in result["rows"]
                  if r["status"] == "ok"]
        ylabel, title = "MACs per image (M, log)", "capacity vs latency, before training"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colours = {"fit": "#55a868", "borderline": "#dd8452", "over": "#c44e52"}
    verdicts = {r["label"]: (r.get("deployed") or r).get("verdict") for r in result["rows"]}
    for v in dict.fromkeys(verdicts[p[2]] for p in points):
        mine = [p for p in points if verdicts[p[2]] == v]
        ax.scatter([p[0] for p in mine], [p[1] for p in mine], color=colours.get(v, "#4c72b0"), zorder=3,
                   label=v or "measured")
    for x, y, label, _ in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = sorted((x, y) for x, y, _, on in points if on)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#4c72b0", alpha=0.6,
                label="Pareto front")
    if cfg["budget_ms"]:
        ax.axvline(cfg["budget_ms"], color="#c44e52", linestyle="--", label=f"budget {cfg['budget_ms']} ms")
    if not trained:
        ax.set_yscale("log")
    xs = [p[0] for p in points]
    if xs and max(xs) > 10 * min(xs):  # a spread of more than 10×: the fast cluster needs a log axis
        ax.set_xscale("log")
    ax.set(xlabel=f"{cfg['percentile']} latency (ms), {cfg['backend']} {cfg['precision']} {cfg['device']} "
                  f"batch {cfg['batch']}", ylabel=ylabel, title=f"{result['recipe']}: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    write_json(out / "students.json", result)
    write_text(out / "students.md", markdown(result))
    plot(out / "students.png", result)
