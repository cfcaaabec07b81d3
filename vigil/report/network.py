"""The network report (SAP 8): per-site and pooled rates, hazard ratios by site and pooled (fixed, random,
profile) with a forest plot per outcome, heterogeneity, the distributed site-stratified model (P3), and
the packages refused. It reads the coordinator's network.* tables only (one pooling and, when there is
one, the latest P3), so any pooling renders again. Every site value is as the site's package shows it,
already disclosure-controlled by the site; a pooled estimate is not a count.

`render_network_report(db, out)` writes out/report.html, out/report.pdf and out/tables/<id>.csv.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from vigil.inert import inert
from vigil.report import figures as F
from vigil.report import tables as T
from vigil.report.data import OUTCOMES, STRATIFIERS
from vigil.report.disclosure import NOT_APPLICABLE, SUPPRESSED, format_estimate, format_interval
from vigil.resources import TEMPLATE_DIR

TITLE = "Serious infections after alemtuzumab: the study network"
METHOD_LABELS = {"fixed": "fixed", "random_dl": "random (DL)", "profile": "profile", "distributed": "P3 distributed"}
DISAGREE = 0.10  # a profile HR or limit more than 10 % from the fixed effect's is listed


@dataclass
class Block:
    kind: str
    table: T.Table | None = None
    figure: F.Figure | None = None
    text: str = ""


@dataclass
class Section:
    number: str
    title: str
    intro: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


@dataclass
class NetworkReport:
    pool_id: int
    html: Path
    pdf: Path
    pages: int
    tables: list[str]


def _table(id_: str, title: str, rows: list[dict], labels: list[str], notes=(), wide: bool = False) -> T.Table:
    frame = pl.DataFrame(rows, schema={c: pl.Utf8 for c in rows[0]}) if rows else pl.DataFrame()
    return T.Table(id_, title, frame, labels, [], notes=list(notes), wide=wide)


def _hr(row: dict | None) -> tuple[str, str]:
    if row is None or row.get("hr") is None:
        return NOT_APPLICABLE, NOT_APPLICABLE
    return format_estimate(row["hr"]), format_interval(row["ci_lower"], row["ci_upper"])


def _select_pool(con, pool_id: int | None) -> tuple[dict, dict | None]:
    def one(sql, params):
        cursor = con.execute(sql, params)
        names = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
        return dict(zip(names, rows[0])) if rows else None

    pool = one("SELECT * FROM network.pools WHERE kind = 'packages' AND (? IS NULL OR pool_id = ?) "
               "ORDER BY pool_id DESC LIMIT 1", [pool_id, pool_id])
    if pool is None:
        raise ValueError(f"no pooling of packages {'numbered ' + str(pool_id) if pool_id else 'yet'} in the database")
    p3 = one("SELECT * FROM network.pools WHERE kind = 'distributed_cox' ORDER BY pool_id DESC LIMIT 1", [])
    return pool, p3


def build_sections(con: duckdb.DuckDBPyConnection, pool: dict, p3: dict | None) -> list[Section]:
    pid = pool["pool_id"]
    q = lambda sql, *p: con.sql(sql, params=list(p)).pl()  # noqa: E731
    sites = q("SELECT * FROM network.sites WHERE pool_id = ? ORDER BY position", pid)
    estimates = q("SELECT * FROM network.site_estimates WHERE pool_id = ?", pid)
    rates = q("SELECT * FROM network.pooled_rates WHERE pool_id = ?", pid)
    hrs = q("SELECT * FROM network.pooled_hr WHERE pool_id = ?", pid)
    distributed = q("SELECT * FROM network.pooled_hr WHERE pool_id = ?", p3["pool_id"]) if p3 else hrs.clear()
    accepted = sites.filter(pl.col("status") == "accepted")["site_id"].to_list()
    sections = []

    # 1 the sites
    rows = [{"Site": r["site_id"] or "(manifest unreadable)", "Package": Path(r["package"]).name, "Status": r["status"],
             "Data cut": r["data_cuts"] or "", "vigil": r["vigil_version"] or "",
             "Manifest sha256": (r["manifest_sha256"] or "")[:16], "Reason refused": r["reason"] or ""}
            for r in sites.iter_rows(named=True)]
    s1 = Section("1", "Sites and packages", [
        f"{len(accepted)} of {len(rows)} package(s) accepted; a refused package is left out whole, and the "
        "reason names the site and the file. The manifest hash is every pooled row's provenance."])
    s1.blocks.append(Block("table", _table("sites", "Site packages given to the coordinator", rows,
                                           list(rows[0]) if rows else [])))
    sections.append(s1)

    # 2 rates
    s2 = Section("2", "Incidence rates by site and pooled (P1)", [
        "Rates per 1,000 person-years. Fixed: all events over all person-years with the exact Poisson CI, "
        "written only where no site suppressed a count (it then equals the pooled analysis). Random: "
        "DerSimonian-Laird over the log rates of the sites with at least 5 events (two or more sites). "
        "Profile: the summed Poisson likelihood, likelihood-ratio CI."])
    for outcome, label in OUTCOMES.items():
        rows = []
        for stratifier, slabel in STRATIFIERS.items():
            if stratifier == "site":
                continue
            part = rates.filter(pl.col("outcome") == outcome, pl.col("stratifier") == stratifier)
            for stratum in part["stratum"].unique(maintain_order=True).to_list():
                by = {r["method"]: r for r in part.filter(pl.col("stratum") == stratum).iter_rows(named=True)}
                row = {"Stratum": f"{slabel}: {stratum}" if stratifier != "overall" else "Overall"}
                for site in accepted:
                    e = estimates.filter(pl.col("site_id") == site, pl.col("quantity") == "rate",
                                         pl.col("outcome") == outcome, pl.col("variable") == stratifier,
                                         pl.col("level") == stratum)
                    row[site] = (SUPPRESSED if e.is_empty() or e["estimate"][0] is None else
                                 format_estimate(e["estimate"][0]))
                for method in ("fixed", "random_dl", "profile"):
                    m = by.get(method) or {}
                    row[METHOD_LABELS[method]] = (f"{format_estimate(m['estimate'])} ({format_interval(m['ci_lower'], m['ci_upper'])})"
                                                  if m.get("estimate") is not None else NOT_APPLICABLE)
                dl = by.get("random_dl") or {}
                row["τ²"] = format_estimate(dl.get("tau2"), digits=3)
                row["I² %"] = format_estimate(dl.get("i2"), digits=1)
                rows.append(row)
        if rows:
            s2.blocks.append(Block("table", _table(f"rates_{outcome}", f"{label}: rate per 1,000 person-years",
                                                   rows, ["Stratum"], notes=[
                f"{SUPPRESSED}: suppressed by the site (SAP 5); {NOT_APPLICABLE}: not pooled (see "
                "network.pooled_rates.note: a site's count suppressed, or fewer than two sites with 5 events)."],
                wide=True)))
    sections.append(s2)

    # 3 hazard ratios
    s3 = Section("3", "Hazard ratios by site and pooled (P2, P3)", [
        "Multivariable Cox model of A5. Each site's HR as its package shows it (its level and reference level "
        "have at least 5 patients and events there); pooled by inverse-variance fixed effect, DerSimonian-Laird "
        "random effects, and the sum of the sites' profile likelihoods (no normal approximation); P3 is the "
        "site-stratified model fitted across the sites by distributed Newton-Raphson, equal to the model "
        "strata(site) on the pooled rows."])
    disagree = []
    for outcome in ("first_serious", "first_opportunistic"):
        part = hrs.filter(pl.col("outcome") == outcome)
        if part.is_empty():
            continue
        rows, forest = [], []
        keys = part.select("variable", "level").unique(maintain_order=True).rows()
        for variable, level in keys:
            by = {r["method"]: r for r in part.filter(pl.col("variable") == variable, pl.col("level") == level)
                  .iter_rows(named=True)}
            dist = distributed.filter(pl.col("outcome") == outcome, pl.col("variable") == variable,
                                      pl.col("level") == level)
            if not dist.is_empty():
                by["distributed"] = dist.row(0, named=True)
            row = {"Variable": STRATIFIERS.get(variable, variable), "Level": level}
            drawn = {}
            for site in accepted:
                e = estimates.filter(pl.col("site_id") == site, pl.col("quantity") == "hazard_ratio",
                                     pl.col("outcome") == outcome, pl.col("variable") == variable, pl.col("level") == level)
                shown = not e.is_empty() and e["estimate"][0] is not None
                row[site] = format_estimate(e["estimate"][0]) if shown else SUPPRESSED
                if shown:
                    drawn[site] = (e["estimate"][0], e["ci_lower"][0], e["ci_upper"][0])
            for method in ("fixed", "random_dl", "profile", "distributed"):
                hr, ci = _hr(by.get(method))
                row[METHOD_LABELS[method]] = f"{hr} ({ci})" if hr != NOT_APPLICABLE else NOT_APPLICABLE
                m = by.get(method)
                if m and m.get("hr") is not None:
                    drawn[METHOD_LABELS[method]] = (m["hr"], m["ci_lower"], m["ci_upper"])
            dl = by.get("random_dl") or {}
            row["τ²"] = format_estimate(dl.get("tau2"), digits=3)
            row["I² %"] = format_estimate(dl.get("i2"), digits=1)
            rows.append(row)
            forest.append({"group": STRATIFIERS.get(variable, variable), "label": level, "estimates": drawn})
            fixed, profile = by.get("fixed"), by.get("profile")
            if fixed and profile and fixed.get("hr") and profile.get("hr"):
                worst = max(abs(profile[c] / fixed[c] - 1) for c in ("hr", "ci_lower", "ci_upper")
                            if profile.get(c) and fixed.get(c))
                if worst > DISAGREE:
                    disagree.append({"Outcome": OUTCOMES[outcome], "Variable": STRATIFIERS.get(variable, variable),
                                     "Level": level, "Sites": fixed["sites"], "fixed": row["fixed"],
                                     "profile": row["profile"], "Largest difference": f"{100 * worst:.0f} %"})
        s3.blocks.append(Block("table", _table(f"hr_{outcome}", f"{OUTCOMES[outcome]}: hazard ratios by site and pooled",
                                               rows, ["Variable", "Level"], notes=[
            f"{SUPPRESSED}: not in the site's package (fewer than 5 patients or events in the level or its reference "
            f"there, or not estimable); {NOT_APPLICABLE}: not pooled."], wide=True)))
        series = ["P3 distributed", "fixed", "random (DL)", "profile", *accepted]
        figure = F.network_forest(OUTCOMES[outcome], series, forest, f"network_forest_{outcome}")
        if figure:
            s3.blocks.append(Block("figure", figure=figure))
    sections.append(s3)

    # 4 where the normal approximation and the profile disagree
    s4 = Section("4", "Where the profile likelihood and the normal approximation disagree", [
        f"Hazard ratios whose profile-likelihood estimate or limit differs from the fixed effect's by more than "
        f"{100 * DISAGREE:.0f} %: where sites have few events the normal approximation of each site's log HR fails, "
        "and the profile, which needs none, is the one to read."])
    if disagree:
        s4.blocks.append(Block("table", _table("disagreements", "Profile versus fixed effect", disagree,
                                               ["Outcome", "Variable", "Level", "Sites"])))
    else:
        s4.blocks.append(Block("note", text="None: the profile and the fixed effect agree within 10 % everywhere."))
    sections.append(s4)
    return sections


def render_network_report(db: Path, out: Path, pool_id: int | None = None) -> NetworkReport:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from vigil.report.render import write_pdf

    con = duckdb.connect(str(db), read_only=True)
    try:
        pool, p3 = _select_pool(con, pool_id)
        sections = build_sections(con, pool, p3)
    finally:
        con.close()
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    tables = [b.table for s in sections for b in s.blocks if b.table is not None]
    for t in tables:
        with (out / "tables" / f"{t.id}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(t.frame.columns)
            writer.writerows(t.frame.rows())
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("network.html.j2").render(
        css=(TEMPLATE_DIR / "report.css").read_text(encoding="utf-8"), title=TITLE,
        pool={k: inert(v) for k, v in pool.items()}, p3=p3, sections=sections, suppressed=SUPPRESSED,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    (out / "report.html").write_text(html, encoding="utf-8")
    pages = write_pdf(html, out / "report.pdf")
    return NetworkReport(int(pool["pool_id"]), out / "report.html", out / "report.pdf", pages, [t.id for t in tables])
