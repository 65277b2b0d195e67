"""Which experts does each layer pick, per language? And what does each expert of one layer
do to the next-token distribution?

    pip install ./crates/python matplotlib
    python crates/python/examples/expert_usage.py --model tests/fixtures/models/tiny-bf16

draws expert_usage.png (one heatmap per language: layers down, experts across, the share
of that layer's routing slots each expert took) and prints, for each expert of `--layer`,
how far ablating it moves the next-token distribution of every text (KL divergence from the
plain distribution, and whether the most likely token changes). On the repository's tiny
model the weights are random, so the picture is noise; on Mixtral-8x7B (a directory, a GGUF
file or `mistralai/Mixtral-8x7B-Instruct-v0.1`) it shows the layer-wise specialisation
the Mixtral paper reports (Jiang et al. 2024, section 5).
"""

import argparse

import numpy as np

import mixtral

TEXTS = {
    "English": "The old lighthouse keeper climbed the stairs every evening to light the lamp, "
    "watching the ships pass through the narrow channel below.",
    "French": "Le vieux gardien du phare montait l'escalier chaque soir pour allumer la lampe "
    "et regardait les navires passer dans l'étroit chenal.",
    "German": "Der alte Leuchtturmwärter stieg jeden Abend die Treppe hinauf, um die Lampe "
    "anzuzünden, und sah den Schiffen im engen Kanal nach.",
    "Spanish": "El viejo farero subía las escaleras cada tarde para encender la lámpara y "
    "miraba pasar los barcos por el estrecho canal.",
    "Italian": "Il vecchio guardiano del faro saliva le scale ogni sera per accendere la "
    "lampada, guardando le navi passare nello stretto canale.",
    "Code": "def light_lamp(keeper):\n    for step in range(keeper.stairs):\n"
    "        keeper.climb(step)\n    return keeper.lamp.on()",
}


def expert_shares(engine, text):
    """`[L, E]`: the fraction of each layer's routing slots (tokens x K) each expert took."""
    routing = engine.logits(text, routing=True)["routing"]  # [L, T, K]
    layers, _, _ = routing.shape
    experts = engine.config["num_local_experts"]
    counts = np.zeros((layers, experts))
    for layer in range(layers):
        counts[layer] = np.bincount(routing[layer].ravel(), minlength=experts)
    return counts / counts.sum(axis=1, keepdims=True)


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def ablation_effects(engine, layer):
    """For each text and each expert of `layer`: KL(plain || ablated) of the next-token
    distribution after the text, and whether its argmax moved."""
    rows = []
    for name, text in TEXTS.items():
        plain = log_softmax(engine.logits(text)["logits"][-1])
        for expert in range(engine.config["num_local_experts"]):
            out = engine.logits(text, interventions=[mixtral.Ablate(layer, expert)])
            ablated = log_softmax(out["logits"][-1])
            kl = float(np.sum(np.exp(plain) * (plain - ablated)))
            rows.append((name, expert, kl, int(plain.argmax()) != int(ablated.argmax())))
    return rows


def draw(shares, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(shares)
    layers, experts = shares[names[0]].shape
    fig, axes = plt.subplots(
        1, len(names), figsize=(2.2 * len(names) + 1, 0.25 * layers + 2), sharey=True
    )
    vmax = max(float(s.max()) for s in shares.values())
    for ax, name in zip(axes, names):
        image = ax.imshow(shares[name], aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(name)
        ax.set_xlabel("expert")
        ax.set_xticks(range(experts))
        ax.set_yticks(range(0, layers, max(1, layers // 8)))
    axes[0].set_ylabel("layer")
    fig.colorbar(image, ax=axes, label="share of routing slots")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tests/fixtures/models/tiny-bf16")
    parser.add_argument("--layer", type=int, help="the layer whose experts are ablated (default: the middle one)")
    parser.add_argument("--out", default="expert_usage.png")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    engine = mixtral.Engine(args.model, threads=args.threads)
    c = engine.config
    print(f"{args.model}: {c['num_hidden_layers']} layers, {c['num_local_experts']} experts, top-{c['num_experts_per_tok']}")

    shares = {name: expert_shares(engine, text) for name, text in TEXTS.items()}
    draw(shares, args.out)
    print(f"wrote {args.out}")
    favourite = {name: s.argmax(axis=1) for name, s in shares.items()}
    print("most used expert per layer:")
    for name, f in favourite.items():
        print(f"  {name:8} {' '.join(str(e) for e in f)}")

    layer = c["num_hidden_layers"] // 2 if args.layer is None else args.layer
    print(f"\nablating each expert of layer {layer}: KL(plain || ablated) of the next token")
    rows = ablation_effects(engine, layer)
    header = "expert " + " ".join(f"{name:>9}" for name in TEXTS)
    print(header)
    for expert in range(c["num_local_experts"]):
        cells = []
        for name in TEXTS:
            _, _, kl, moved = next(r for r in rows if r[0] == name and r[1] == expert)
            cells.append(f"{kl:8.4f}{'*' if moved else ' '}")
        print(f"{expert:6} " + " ".join(cells))
    print("(* : the most likely next token changed)")


if __name__ == "__main__":
    main()
