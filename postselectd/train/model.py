"""The model `train` writes: the head as ONNX (with the model card in its metadata), the
card as .json and as text a photographer reads, and the frames it learnt from."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from postselectd.analysis.personal import TASTE_FEATURES, upgrade_taste
from postselectd.config import RatingPolicy, TrainConfig
from postselectd.onnx_export import Graph, model_bytes
from postselectd.ratings_sources import CORRECTION, Verdict
from postselectd.train.dataset import BLOCK, MIN_SHOOTS, Dataset, Frame
from postselectd.train.evaluate import HELD_OUT
from postselectd.train.fit import (
    KEPT_WITH_REASON,
    PRECISION_FLOOR,
    REASON_SHOOTS,
    RECALL_CONFIDENCE,
    Head,
    fit,
    why_not_overruled,
)

# The card warns that its held-out numbers say little with fewer held-out selects than this
# (counted in scenes), or a recall interval wider than THIN_INTERVAL.
THIN_SELECTS = 30
THIN_INTERVAL = 0.15
EVIDENCE_SHOOTS = 10  # shoots rated for 30% of them to hold out enough scenes


def describe(data: Dataset, frames: list[Frame], metrics: dict, rules: TrainConfig) -> dict:
    """The model card's account of the data and of the held-out numbers (``metrics``)."""
    return {
        "images": len(data),
        "shoots": data.real_shoots,
        **({"blocks": len(data.shoot_names)} if data.stand_in_shoots else {}),
        "selects": int(data.y.sum()),
        "rejects": int((1 - data.y).sum()),
        **{
            k: metrics[k]
            for k in (
                "recall",
                "recall_interval",
                "precision",
                "precision_interval",
                "auc",
                "threshold",
            )
        },
        "recall_confidence": RECALL_CONFIDENCE,
        "aimed_recall": metrics["aimed_recall"],
        "select_scenes": metrics.get("select_scenes"),
        "rated_recall": metrics["rated_recall"],
        "rated_precision": metrics["rated_precision"],
        "default_recall": metrics["default_recall"],
        "default_precision": metrics["default_precision"],
        "default_auc": metrics["default_auc"],
        "target_recall": rules.target_recall,
        # What the model evaluated here overrules, and why; the written model's replace it.
        "overruled_reasons": metrics["overruled_reasons"],
        "reason_evidence": metrics["reason_evidence"],
        "never_kept_people": metrics.get("never_kept_people"),
        "margin_for_precision": metrics.get("margin_for_precision", False),
        "held_out": metrics["held_out"],
        "stand_in_shoots": data.stand_in_shoots,
        "sources": dict(Counter(f.verdict.source for f in frames)),
        "corrections": int(sum(f.verdict.source == CORRECTION for f in frames)),
        "mirrored_selects": int(data.y.sum()),
        "photos_found": len(frames),
        "not_used": {},
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": None,
    }


def make_model(
    data: Dataset,
    frames: list[Frame],
    card: dict,
    metrics: dict,
    rules: TrainConfig,
    folder: Path,
    policy: RatingPolicy,
) -> Path:
    """Fit on every shoot, write the model with ``card`` (completed here) and the frames
    it learnt from (so the daemon can learn on from them without reading a photo)."""
    head, fitted = fit(
        data, np.arange(len(data)), rules.target_recall, rules.respect_reasons, policy
    )
    card["threshold"] = round(head.threshold, 4)
    card["aimed_recall"] = fitted["aimed_recall"]
    card["margin_for_precision"] = fitted["margin_for_precision"]
    card["select_scenes"] = fitted["select_scenes"]
    card["overruled_reasons"] = fitted["overruled_reasons"]
    card["reason_evidence"] = fitted["reason_evidence"]
    card["never_kept_people"] = fitted["never_kept_people"]
    card["held_out"]["threshold"] = metrics["threshold"]
    card["l2"] = fitted["l2"]
    card["warnings"] = evidence_warnings(card)
    model_path = write_model(head, card, folder)
    card["model"] = str(model_path)
    save_frames(frames, model_path)
    return model_path


def frames_path(model_path: Path) -> Path:
    return model_path.with_suffix(".frames.npz")


def save_frames(frames: list[Frame], model_path: Path) -> None:
    """``<model>.frames.npz``: the rated frames a model learnt from, with their features."""
    path = frames_path(model_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        paths=np.array([str(f.path) for f in frames]),
        verdicts=np.array([f.verdict.verdict for f in frames]),
        sources=np.array([f.verdict.source for f in frames]),
        whys=np.array([f.verdict.why for f in frames]),
        capture_days=np.array([f.capture_day for f in frames]),
        taste=np.stack([f.taste for f in frames]),
        embedding=np.stack([f.embedding for f in frames]),
        mirrored=np.stack([f.mirrored for f in frames]),
    )
    os.replace(tmp, path)


def load_frames(model_path: Path) -> list[Frame]:
    """The frames ``save_frames`` kept beside a model; OSError / ValueError when absent
    or unreadable (a model from before they were kept)."""
    with np.load(frames_path(model_path)) as data:
        return [
            Frame(
                path=Path(str(path)),
                verdict=Verdict(Path(str(path)), str(verdict), str(source), str(why)),
                taste=upgrade_taste(data["taste"][i]),
                embedding=np.asarray(data["embedding"][i], np.float32),
                mirrored=np.asarray(data["mirrored"][i], np.float32),
                capture_day=str(day),
            )
            for i, (path, verdict, source, why, day) in enumerate(
                zip(
                    data["paths"],
                    data["verdicts"],
                    data["sources"],
                    data["whys"],
                    data["capture_days"],
                    strict=True,
                )
            )
        ]


# --- writing the model ------------------------------------------------------------------------


def head_graph(head: Head) -> Graph:
    """P(select) as an ONNX graph; standardization, PCA and Platt scaling folded in."""
    nf, nk = len(TASTE_FEATURES), head.pca.shape[1]
    g = Graph(
        "personal_head",
        inputs=[("features", ("batch", nf)), ("embedding", ("batch", 1280))],
        outputs=[("select_probability", ("batch", 1))],
    )
    xs = g.node(
        "Div",
        [
            g.node("Sub", ["features", g.const("x_mean", head.x_mean)], "xc"),
            g.const("x_std", head.x_std),
        ],
        "xs",
    )
    ep = g.node(
        "MatMul",
        [
            g.node(
                "Sub",
                [
                    g.node("LpNormalization", ["embedding"], "eu", axis=1, p=2),
                    g.const("e_mean", head.e_mean),
                ],
                "ec",
            ),
            g.const("pca", head.pca),
        ],
        "ep",
    )
    ps = g.node(
        "Div",
        [g.node("Sub", [ep, g.const("p_mean", head.p_mean)], "pc"), g.const("p_std", head.p_std)],
        "ps",
    )
    z = g.node("Concat", [xs, ps], "z", axis=1)
    w = (head.scale * head.w).reshape(nf + nk, 1)
    b = np.array([head.scale * head.b + head.shift])
    logit = g.node("Add", [g.node("MatMul", [z, g.const("w", w)], "zw"), g.const("b", b)], "logit")
    if head.never_kept_person is None:
        g.node("Sigmoid", [logit], "select_probability")
        return g
    # The frames with a person the photographer never kept (fit.never_kept_people).
    p = g.node("Sigmoid", [logit], "p")
    one_hot = np.zeros((nf, 1))
    one_hot[TASTE_FEATURES.index("person")] = 1.0
    person = g.node("MatMul", ["features", g.const("person_column", one_hot)], "person")
    never_kept = g.node(
        "GreaterOrEqual", [person, g.const("never_kept_person", [head.never_kept_person])], "nk"
    )
    capped = g.node("Min", [p, g.const("never_kept_cap", [head.never_kept_cap])], "capped")
    g.node("Where", [never_kept, capped, p], "select_probability")
    return g


def write_model(head: Head, card: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"personal-{stamp}.onnx"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"personal-{stamp}-{n}.onnx"
    card = {**card, "model": str(path)}
    metadata = {
        "postselectd.name": path.stem,
        "postselectd.version": "1",
        "postselectd.task": "select-probability",
        "postselectd.features": json.dumps(TASTE_FEATURES),
        "postselectd.embedding": "efficientnet_lite0",
        "postselectd.threshold": repr(float(head.threshold)),
        "postselectd.overruled_reasons": json.dumps(list(head.overruled_reasons)),
        "postselectd.outputs": json.dumps(
            {
                "select_probability": {
                    "shape": ["batch", 1],
                    "meaning": "calibrated P(the photographer selects it)",
                }
            }
        ),
        "postselectd.card": json.dumps(card),
        "postselectd.description": "personal taste head made by `postselectd train`",
    }
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(model_bytes(head_graph(head), metadata))
    os.replace(tmp, path)
    return path


def write_card(card: dict, model_path: Path) -> None:
    model_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    model_path.with_suffix(".txt").write_text(format_card(card) + "\n")


def evidence_warnings(card: dict) -> list[str]:
    """What the card's held-out numbers cannot show, and what more to rate so they can."""
    held = card["held_out"]
    low, high = card.get("recall_interval") or (float("nan"), float("nan"))
    # Counted in scenes (evaluate: a burst is kept or lost together); cards from before
    # counted frames.
    scenes = held.get("select_scenes", held["selects"])
    thin = scenes < THIN_SELECTS or not (high - low <= THIN_INTERVAL)
    if not thin:
        return []
    wanted_selects = math.ceil(THIN_SELECTS / HELD_OUT)
    more = []
    if card["selects"] < wanted_selects:
        more.append(f"about {wanted_selects - card['selects']} more selects")
    if card["rejects"] < wanted_selects:
        more.append(f"{wanted_selects - card['rejects']} more rejects")
    shoots = f"from at least {EVIDENCE_SHOOTS - card['shoots']} more shoots (folders or days)"
    if card["shoots"] >= EVIDENCE_SHOOTS:
        shoots = "from other shoots"
    todo = " and ".join(more) if more else "more selects and rejects"
    return [
        f"the held-out evidence is thin: {held['selects']} selects held out"
        + (f" ({scenes} scenes)" if scenes != held["selects"] else "")
        + ", so the recall "
        f"of {_pct(card['recall'])} could be anywhere from {_pct(low)} to {_pct(high)}; "
        f"rate {todo} {shoots} and train again"
    ]


def _pct(value) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{100 * value:.0f}%")
    )


def format_card(card: dict) -> str:
    """The model card as a photographer reads it."""
    pct = _pct
    held = card["held_out"]
    held_in = (
        f"{held['shoots']} shoots"
        if "shoots" in held
        else f"{held['blocks']} blocks of consecutive frames"
    )
    lines = [
        f"personal model, {card['created']}"
        + (f": {card['model']}" if card["model"] else " (evaluation only, nothing written)"),
        f"learnt from      {card['images']} photos in {card['shoots']} shoots: "
        f"{card['selects']} selects, {card['rejects']} rejects",
        "ratings from     " + ", ".join(f"{k} {v}" for k, v in card["sources"].items()),
        *(
            [
                f"learnt           by the daemon from {learnt['corrections']} corrections of its "
                f"ratings ({learnt['reason']}); it replaced {learnt['previous_model']} by keeping "
                "at least as large a share of your selects on held-out shoots"
            ]
            if (learnt := card.get("learnt"))
            else []
        ),
        f"held out         {held['images']} photos in {held_in} never trained on "
        f"({held['selects']} selects"
        + (
            f" in {held['select_scenes']} scenes"
            if held.get("select_scenes", held["selects"]) != held["selects"]
            else ""
        )
        + f", {held['rejects']} rejects)",
        "                 personal model   shipped model",
        f"  selects kept   {pct(card['recall']):>14}   {pct(card['default_recall']):>13}"
        + (
            f"   ({pct(card['recall_interval'][0])}-{pct(card['recall_interval'][1])}: "
            f"{100 * card.get('recall_confidence', RECALL_CONFIDENCE):.0f}% interval)"
            if card.get("recall_interval")
            else ""
        ),
        f"  kept that are  {pct(card['precision']):>14}   {pct(card['default_precision']):>13}"
        + (
            f"   (precision; {pct(card['precision_interval'][0])}-"
            f"{pct(card['precision_interval'][1])})"
            if card.get("precision_interval")
            else "   (precision)"
        ),
        f"  ROC AUC        {card['auc']:>14}   {card['default_auc']:>13}",
        f"  as rated       {pct(card['rated_recall']):>14}   {'':>13}   (kept, and no reason "
        f"made it a reject: {pct(card['rated_precision'])} of them selects)",
        f"threshold        P(select) >= {card['threshold']} keeps a frame "
        f"(target: {pct(card['target_recall'])} of your selects"
        + (
            f"; set to keep {pct(card['aimed_recall'])} of them on shoots each model did "
            "not see, a margin for the few selects it was set on"
            + (f", {card['select_scenes']} scenes" if card.get("select_scenes") else "")
            + (
                f"; less than it asks, where more would keep under {pct(PRECISION_FLOOR)} selects"
                if card.get("margin_for_precision")
                else ""
            )
            + ")"
            if card.get("aimed_recall")
            else ")"
        ),
    ]
    overruled = card.get("overruled_reasons")
    lines.append(
        "reasons          "
        + (
            f"{', '.join(overruled)}: you keep such frames, so your model decides; "
            "other reasons still make a reject"
            if overruled
            else "blur, closed eyes, bad exposure still make a reject"
        )
    )
    kept_anyway = [
        f"                 {name}: still a reject, {why}"
        for name, evidence in card.get("reason_evidence", {}).items()
        if (why := why_not_overruled(evidence, card["selects"])) and name not in (overruled or ())
    ]
    if kept_anyway:
        lines += kept_anyway
        lines.append(
            f"                 (your model decides a reason only when {KEPT_WITH_REASON} of your "
            f"selects from {REASON_SHOOTS} shoots carry it, and on shoots it did not see it "
            "keeps them without your rejects that carry it)"
        )
    if (never := card.get("never_kept_people")) and never.get("applies"):
        lines.append(
            f"people           you kept none of the {never['rejects']} photos with a person in "
            f"them ({never['scenes']} scenes, {never['shoots']} shoots): your model keeps none"
        )
    if card.get("stand_in_shoots"):
        lines.append(
            f"note             fewer than {MIN_SHOOTS} shoots: {card.get('blocks', 'some')} "
            f"blocks of up to {BLOCK} consecutive frames stood in for shoots, so the "
            "held-out numbers are optimistic"
        )
    for warning in card.get("warnings", ()):
        lines.append(f"warning          {warning}")
    if card["not_used"]:
        lines.append(
            "not used         " + ", ".join(f"{k} {v}" for k, v in card["not_used"].items())
        )
    return "\n".join(lines)
