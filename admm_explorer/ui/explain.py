"""The Explain layer: per panel, what it shows, the equation behind it, what to look for, and the lesson.

Every statement holds under the Explorer's defaults (lenet5 on the embedded MNIST sample, paper 1's rates,
geometric rho from 1e-3 by 1.3 per Z/U round); the lessons are the course notebooks in notebooks/.
"""
from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as w

COURSE = {
    "01-admm-from-scratch": "01. ADMM from scratch",
    "02-pruning-lenet5": "02. Pruning LeNet-5 with ADMM",
    "03-progressive-and-quantization": "03. Progressive ADMM and quantization",
    "04-structured-pruning-and-prm": "04. Structured pruning and P-RM",
    "05-reweighted-admm": "05. Reweighted ADMM",
}


@dataclass(frozen=True)
class Explanation:
    shows: str  # what the panel shows
    math: str  # the equation it comes from (LaTeX for MathJax: $...$ inline, $$...$$ displayed)
    look: str  # what to look for
    lesson: str  # the course notebook that goes deeper (a key of COURSE)

    def html(self) -> str:
        link = (f"<a href='{self.lesson}.ipynb' target='_blank' rel='noopener'>{COURSE[self.lesson]}</a> "
                f"(<code>notebooks/{self.lesson}.ipynb</code>, or <code>admm-explorer lab</code>)")
        return (f"<div class='ae-explain-text'><p>{self.shows}</p><p>{self.math}</p>"
                f"<p><b>Look for:</b> {self.look}</p><p><b>Deeper:</b> {link}</p></div>")


STEPS = (r"ADMM splits $\min_W f(W)$ subject to $W_i \in S_i$ into three steps per Z/U round $k$, with the scaled "
         r"dual $U$:"
         r"$$W^{k+1} = \arg\min_W \; f(W) + \sum_i \tfrac{\rho_i}{2}\,\|W_i - Z_i^k + U_i^k\|_F^2$$"
         r"$$Z_i^{k+1} = \Pi_{S_i}\!\left(W_i^{k+1} + U_i^k\right), \qquad U_i^{k+1} = U_i^k + W_i^{k+1} - Z_i^{k+1}$$"
         r"The W-step is not solved exactly: it is <i>Z/U every</i> epochs of ordinary training on the loss plus the "
         r"penalty. Under the <i>geometric</i> schedule $\rho \leftarrow \min(1.3\,\rho,\ \rho_{\max})$ after every round.")

EXPLAIN: dict[str, Explanation] = {
    "Setup": Explanation(
        shows="The network and the data every stage works on. <b>Apply setup</b> builds them afresh: a new "
              "session, with new random weights unless a checkpoint is loaded.",
        math=r"Pruning asks for weights $W$ that keep the loss $f(W)$ low while each layer $W_i$ lies in a "
             r"constraint set $S_i$ (few nonzeros, whole filters, a few levels): "
             r"$\min_W f(W)\ \text{subject to}\ W_i \in S_i$.",
        look="<i>Validation</i>: the training digits held out to choose settings on. Purification chooses its "
             "threshold on them; with Validation 0 it chooses on the test set, whose accuracy then flatters the "
             "result. Hold some out (say 500) when the test accuracy is what you report.",
        lesson="02-pruning-lenet5"),
    "Targets": Explanation(
        shows="One row per prunable layer: its shape and weights, and the constraint set $S_i$ ADMM will project "
              "onto: a sparsity, a structure (filters, columns) and a bit width.",
        math=r"Unstructured sparsity $s_i$: $S_i = \{W_i : \operatorname{card}(W_i) \le (1 - s_i)\,n_i\}$, and the "
             r"projection keeps the $(1-s_i)\,n_i$ largest magnitudes. Filters and columns: the same on the rows "
             r"or columns of the layer's GEMM view (out channels $\times$ in channels$\cdot k_h k_w$). Bits: the "
             r"kept weights lie on $\alpha\,Q$, e.g. $\{-\alpha, +\alpha\}$ for 1 bit. Compression is all weights "
             r"over kept weights: $\sum_i n_i / \sum_i (1-s_i)\,n_i$.",
        look="how few weights the large layers need: fc1 holds most of LeNet-5's weights, so its rate decides the "
             "compression.",
        lesson="02-pruning-lenet5"),
    "Stages": Explanation(
        shows="The stage buttons and their settings. <b>Pretrain</b> trains the dense network; <b>Run ADMM</b> runs "
              "the three steps below; <b>Retrain</b> is the hard prune (W keeps only Z's support) and masked "
              "retraining; <b>Progressive</b> reaches the targets in steps; <b>Reweighted</b> lets a reweighted L1 "
              "penalty choose the kept weights instead of the per-layer rates.",
        math=STEPS,
        look="ρ sets how hard the penalty pulls W towards Z: too small and W ignores the constraint (a large primal "
             "residual, a big accuracy drop at the hard prune); too large and Z freezes on its first projection "
             "(nothing better than magnitude pruning).",
        lesson="01-admm-from-scratch"),
    "Residuals": Explanation(
        shows="For each layer at every Z/U round, on one round axis: the primal residual (solid) and the dual "
              "residual (dotted) on a log axis, <i>absolute</i> or <i>normalised</i>; under them ρ after each round "
              "(log axis) and the mask flips, the share of Z's kept weights that the round before did not keep. A "
              "layer's name in the legend hides or shows all its lines.",
        math=r"Primal: $r^k = \|W^k - Z^k\|_F$, how far the trained weights are from the constraint set's point. "
             r"Dual: $s^k = \rho\,\|Z^k - Z^{k-1}\|_F$, how much Z still moves, scaled by $\rho$. ADMM has converged "
             r"when both are small. Normalised: $r^k / \|W^k\|_F$ and $s^k / \|\rho U^k\|_F$ ($\rho U$ is the "
             r"unscaled dual variable), scaled as in the relative stopping criteria of Boyd et al. (2011): a layer "
             r"of 500 weights and one of 400,000 on one scale. Mask flips: $|K^k \setminus K^{k-1}| \,/\, |K^k|$, "
             r"$K^k$ the weights $Z^k$ keeps.",
        look="the primal residual of the large layers (fc1, conv2) falling as the penalty pulls W onto Z's "
             "support; a small layer such as conv1 may stay flat while ρ is still small. The dual residual is the "
             "change of Z times ρ: under the default geometric schedule ρ grows 1.3x a round and the dual residual "
             "grows with it, even in the later rounds, when Z moves less and less. Normalised, fc1's primal residual "
             "falls from about 0.9 of ‖W‖ to below 0.3 in 20 rounds while conv1's stays near 1 after the first "
             "round. From the second round the mask flips are near 100% (while ρ is small Z's kept set is replaced "
             "almost whole every round) and they fall as ρ grows: fc1's to about 30% by round 20, conv2's to about "
             "40%, conv1's stays above 90%.",
        lesson="01-admm-from-scratch"),
    "Weight histogram": Explanation(
        shows="The weights W of one layer at a Z/U round, split by Z: blue are the weights Z keeps, orange the "
              "weights Z sets to zero (stacked: together all of W). The count axis is logarithmic from ½, so a bin "
              "holding a single weight is a bar up to the 1 line. The bins cover every weight: when one leaves "
              "their range they widen, and the line above the plot says so. For a layer with bits, dotted lines "
              "mark the levels of Z.",
        math=r"The penalty $\tfrac{\rho}{2}\|W - Z + U\|_F^2$ pulls every weight towards $Z - U$; for a weight outside "
             r"Z's support that target is $-U$, which shrinks towards 0 as W meets Z. With $b$ bits Z's kept "
             r"weights lie on $\alpha\,Q$, $Q \subset \{-L, \dots, L\}$ with $L = 2^{b-1} - 1$ ($\pm 1$ for one bit), "
             r"and the penalty pulls them towards those levels.",
        look="the orange weights gathering in a spike at 0 round by round while the blue ones stay spread: that "
             "split is why the hard prune after ADMM costs little accuracy, where a one-shot magnitude prune of a "
             "dense network costs a lot. The kept weights grow: fc1's largest reaches about 1.7 times its size at "
             "the start within 13 rounds, and the bins widen to hold it.",
        lesson="02-pruning-lenet5"),
    "Accuracy": Explanation(
        shows="Train and test accuracy and loss at every evaluation, across all stages (dashed lines mark where a "
              "stage began).",
        math=r"During ADMM the network evaluated is the dense W, trained on $f(W)$ plus the penalty; the pruned "
             r"network appears only at the hard prune, when every weight outside Z's support is set to 0.",
        look="accuracy holding during ADMM, a small dip when Retrain prunes, and its recovery under masked "
             "retraining (pruned weights stay exactly 0).",
        lesson="02-pruning-lenet5"),
    "Sparsity": Explanation(
        shows="Per layer: the target, Z's sparsity at the last ADMM round, and the exact zeros of W now.",
        math=r"Z is a projection, so $Z_i \in S_i$ always: its sparsity equals the target from the first round. W "
             r"only approaches Z; it holds exact zeros after the hard prune.",
        look="W's bar near 0 during ADMM (ADMM has not pruned yet) and equal to the target after Retrain.",
        lesson="02-pruning-lenet5"),
    "P-RM": Explanation(
        shows="Network purification and unused path removal (Ma et al., P-RM), then the physically smaller "
              "network: parameters, multiply-accumulates and latency before and after.",
        math=r"Purification drops a filter or column whose norm is below $\tau$ times its layer's mean norm; "
             r"$\tau$ rises while the accuracy on the validation share (the test set when none is held out) stays within the tolerance. Unused path removal follows "
             r"the channels: a filter that is all zero frees the matching input channel of the next layer, and an "
             r"input channel no one reads frees the filter that produces it.",
        look="structured targets (filters, columns) leave whole channels to remove; unstructured sparsity rarely "
             "empties a whole filter, so little shrinks. The shrunk network gives the masked network's outputs.",
        lesson="04-structured-pruning-and-prm"),
    "Export": Explanation(
        shows="Save what the session made: a checkpoint (weights and masks), the shrunk model, ONNX, and the recipe "
              "that reproduces the session with <code>admm-explorer run</code>.",
        math=r"The compression a run reports is all prunable weights over the nonzero ones, "
             r"$\sum_i n_i \,/\, \sum_i \|W_i\|_0$. The checkpoint keeps the masks with the weights, so a later "
             r"stage or run continues with exactly the same pruned positions; the recipe lists the stages with the "
             r"settings they ran with.",
        look="a pruned layer in the checkpoint is still dense in memory (zeros included); the shrunk model and ONNX "
             "are the physically smaller network of P-RM. Storage in bytes (positions and values) is notebook 03's "
             "subject.",
        lesson="03-progressive-and-quantization"),
    "Runs": Explanation(
        shows="The run folders on disk (this page's, earlier pages', the command line's), each reopened with all "
              "its curves or branched after one of its stages; the stages run in this page; and two whole "
              "pipelines compared: test accuracy over all their stages on one axis, one layer's final weights "
              "side by side.",
        math=r"Compare pipelines at the same epoch budget: ADMM then retraining against a one-shot magnitude prune "
             r"then retraining, at the same rates. Magnitude pruning keeps the largest $|W|$ of the dense network at "
             r"once; ADMM keeps $\Pi_S(W + U)$ after W has had rounds to move towards it.",
        look="branch an ADMM run after its pretrain and press Magnitude: both pipelines share the pretrain's curve, "
             "and at high rates ADMM keeps far more accuracy right after the hard prune than magnitude pruning does.",
        lesson="02-pruning-lenet5"),
}


def explain_toggle(title: str) -> tuple[w.ToggleButton, w.HTMLMath] | None:
    """An Explain button for a panel's title row and the explanation it opens (hidden until pressed)."""
    explanation = EXPLAIN.get(title)
    if explanation is None:
        return None
    text = w.HTMLMath(explanation.html(), layout=w.Layout(display="none", margin="2px 0 6px 0"))
    text.add_class("ae-explain")
    toggle = w.ToggleButton(description="Explain", icon="question-circle", tooltip=f"what the {title} panel shows",
                            layout=w.Layout(width="auto"))
    toggle.add_class("ae-explain-button")
    toggle.observe(lambda change: setattr(text.layout, "display", "block" if change["new"] else "none"), "value")
    return toggle, text
