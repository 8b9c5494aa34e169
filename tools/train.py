#!/usr/bin/env python3
"""Train a 3D voxel GAN (64-3D-RaSGAN by default): the original 64-3D-RaSGan.py flags, plus more.

Example: python tools/train.py -n chair-1 -e 2500 -b 24 -glr 0.0025 -dlr 0.00003
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.choices import (
    ACCURACY_TIMINGS,
    ARCHS,
    AUGMENTS,
    D_NORMS,
    D_RULES,
    GRAPH_STYLES,
    IMPLEMENTATIONS,
    INITS,
    OBJECTIVES,
    OUTPUT_ACTIVATIONS,
    PRECISIONS,
    RULE_LOSSES,
    STRATEGIES,
)
from tf3dgan.cli import HelpFormatter, explicit_flags, run_tool
from tf3dgan.presets import PRESETS, apply_preset, describe_presets
from tf3dgan.training.plan import TrainConfig

D = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a 3D voxel GAN (64-3D-RaSGAN / 3D-GAN) on voxel grids. "
                                            "Resuming (-l) takes every setting from the run's config.json; a flag "
                                            "given with -l changes that setting (each change is announced).",
                                formatter_class=HelpFormatter)
    p.add_argument("-n", "--name", default=D.name, help="name of the run: outputs go to <out>/<name>/")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="fill every setting from a recipe (flags given win): " + describe_presets())
    p.add_argument("-d", "--data", default=D.data,
                   help="training voxels: a folder (searched recursively for .raw/.binvox/.npy/.npz), a file, "
                        "FILE.npz:KEY, or a built-in set such as synthetic:chairs[:res=32][:n=512]")
    p.add_argument("-v", "--validation_data", default=D.validation_data,
                   help="validation voxels (same forms as -d); their D loss is logged and plotted")
    p.add_argument("-e", "--epochs", type=int, default=D.epochs, help="train until this many epochs are done")
    p.add_argument("-b", "--batchsize", type=int, default=D.batchsize, help="batch size (reduced to the dataset size if larger)")
    p.add_argument("-sample", type=int, default=D.sample, help="save a generated grid <epoch>.npy every N epochs")
    p.add_argument("-save", type=int, default=D.save, help="save a checkpoint every N epochs (and at the end)")
    p.add_argument("-graph", type=int, default=D.graph, help="save the loss graph plots/<epoch>.png every N epochs")
    p.add_argument("-graph3d", type=int, default=D.graph3d, help="save a 3D graph 3D_graphs/<epoch>.png every N epochs")
    p.add_argument("--graph-style", default=D.graph_style, choices=GRAPH_STYLES,
                   help="3D_graphs/ pictures: the original's scatter of surface voxels, or a shaded render")
    p.add_argument("-l", "--load", action="store_true", help="resume the run from its latest checkpoint")
    p.add_argument("-le", "--load_epoch", type=int, default=None, help="resume from the checkpoint of this epoch (implies -l)")
    p.add_argument("-glr", "--generator_learning_rate", dest="glr", type=float, default=D.glr, help="generator learning rate")
    p.add_argument("-dlr", "--discriminator_learning_rate", dest="dlr", type=float, default=D.dlr,
                   help="discriminator learning rate")
    p.add_argument("--arch", default=None, choices=ARCHS,
                   help="network architecture [default: rasgan64; a resumed run keeps its own]")
    p.add_argument("--loss", default=D.loss, choices=OBJECTIVES,
                   help="GAN objective: rasgan (the RaSGAN seed), rsgan, minimax (3D-GAN, with the non-saturating G "
                        "loss -log D(G(z)) both 3D-GAN seeds train with), minimax-saturating (the textbook "
                        "log(1 - D(G(z))) G loss), wgan-gp")
    p.add_argument("--d-rule", default=None, choices=D_RULES,
                   help="when to train D: ratio (factor*D_smooth > G_smooth, the RaSGAN seed), accuracy (D accuracy "
                        "< 0.8, 3D-GAN), always [default: ratio for rasgan/rsgan, accuracy for minimax, always for "
                        "wgan-gp]")
    p.add_argument("--accuracy-timing", default=D.accuracy_timing, choices=ACCURACY_TIMINGS,
                   help="the accuracy rule decides on this step's D scores before D's update, training D when < 0.8 "
                        "(current: SomTambe's 3D-GAN), or on the previous step's, when <= 0.8 (previous: tf3dgan 0.1)")
    p.add_argument("--rule-loss", default=D.rule_loss, choices=RULE_LOSSES,
                   help="the D loss the ratio rule smooths on a step that skips D: eval (the real batch through D's "
                        "BatchNorm in inference mode, 64-3D-RaSGan.py's d_loss2) or train (training mode, tf3dgan 0.1)")
    p.add_argument("--rule-alpha", type=float, default=None,
                   help="ratio rule: EMA weight of the smoothed losses [default: the loss's, 0.3; rsgan 0.35]")
    p.add_argument("--rule-factor", type=float, default=None,
                   help="ratio rule: train D when FACTOR*D_smooth > G_smooth [default: 2; rsgan 1.5]")
    p.add_argument("--n-critic", type=int, default=D.n_critic,
                   help="train G every N-th step (64-3D-IWGan.py: 5)")
    p.add_argument("--r1", type=float, default=D.r1,
                   help="R1 penalty GAMMA/2 * E|grad_x D(x)|^2 on the real batch, added to D's loss (Mescheder et "
                        "al. 2018; 0: off)")
    p.add_argument("--g-ema", type=float, default=D.g_ema,
                   help="keep an exponential moving average of G with this BETA (e.g. 0.999); samples, evaluations, "
                        "generator.weights.h5 and generate.py use it, the raw G trains on (0: off)")
    p.add_argument("--augment", default=D.augment, metavar="OPS",
                   help="differentiable augmentation of every grid D sees in training, real and generated: a "
                        f"comma-separated list of {', '.join(AUGMENTS)} (DiffAugment for voxels; '': off)")
    p.add_argument("--adam-beta2", type=float, default=D.adam_beta2, help="Adam's beta2 (beta1 is 0.5 as in every seed)")
    p.add_argument("--adam-epsilon", type=float, default=D.adam_epsilon,
                   help="Adam's epsilon (Keras' default 1e-7; TensorFlow 1 and PyTorch: 1e-8)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="[default: mixed_float16 when a GPU is visible, else float32]")
    p.add_argument("--lr-schedule", default=None,
                   help="per-epoch learning rates 'EPOCH:GLR/DLR,...' (e.g. the seed's chair run "
                        "'0:0.002/0.00005,300:0.005/0.00005,1200:0.007/0.00003,1600:0.008/0.00001') or a JSON file")
    p.add_argument("--lr-schedule-reset", action="store_true",
                   help="where --lr-schedule starts a new row, zero Adam's moments and restart the D rule, as "
                        "restarting the seed's script with the table's next rates did")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of everything random")
    p.add_argument("--width", type=float, default=None,
                   help="channel-width multiplier, e.g. 0.25 for CPU demos [default: 1; a resumed run keeps its own]")
    p.add_argument("--resolution", type=int, default=None,
                   help="grid size; smaller than the data's pools the grids down by an integer factor (binvox's "
                        "-down rule, see --pool-min) [default: the data's]")
    p.add_argument("--pool-min", type=int, default=D.pool_min,
                   help="pooling to --resolution: a cell is set when at least this many of its fine voxels are "
                        "(1 = binvox -down -dmin 1)")
    p.add_argument("--output-activation", default=None, choices=OUTPUT_ACTIVATIONS,
                   help="generator output [default: linear for rasgan64 (as the seed), sigmoid for 3dgan32]")
    p.add_argument("--init", default=None, choices=INITS,
                   help="weight initialisation: normal (N(0, 0.02), the TF1 seeds) or pytorch (PyTorch's layer "
                        "defaults, SomTambe's 3D-GAN) [default: normal for rasgan64, pytorch for 3dgan32]")
    p.add_argument("--data-scale", type=float, default=D.data_scale,
                   help="what an occupied voxel is when D sees it, and the scale G's raw output trains to "
                        "(64-3D-RaSGan.py fed 0/255); samples, meshes and metrics stay on the 0..1 scale")
    p.add_argument("--d-norm", default=D.d_norm, choices=D_NORMS,
                   help="D's normalisation: batch, or none (64-3D-IWGan.py's critic)")
    p.add_argument("--latent-std", type=float, default=D.latent_std,
                   help="G sees z*STD for z ~ N(0, 1) (SomTambe's 3D-GAN: 0.33); sampling needs no change")
    p.add_argument("--mbstd", type=int, default=D.mbstd, metavar="GROUP",
                   help="minibatch standard deviation in D over groups of GROUP grids (StyleGAN's 4; the batch "
                        "per replica must be a multiple; 0: off)")
    p.add_argument("--xla", action="store_true", help="compile the train step with XLA (jit_compile)")
    p.add_argument("--strategy", default=D.strategy, choices=STRATEGIES,
                   help="multi-device training: auto = mirrored over all GPUs when there are several; one; "
                        "mirrored (tf.distribute.MirroredStrategy; under KERAS_BACKEND=jax "
                        "keras.distribution.DataParallel); multiworker (TensorFlow only, from TF_CONFIG). "
                        "The -b batch is global")
    p.add_argument("--no-sync-bn", dest="sync_bn", action="store_false",
                   help="plain (per-replica) BatchNorm under a TensorFlow multi-device strategy [default: "
                        "synchronized; always under JAX]")
    p.add_argument("--cpu-devices", type=int, default=D.cpu_devices,
                   help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)")
    p.add_argument("--conv-transpose", default=D.conv_transpose, choices=IMPLEMENTATIONS,
                   help="how G's transposed convolutions are computed: native (Conv3DTranspose) or phase (one "
                        "stride-1 convolution + interleave; same weights and results, compare with tools/bench.py)")
    p.add_argument("--steps-per-call", type=int, default=D.steps_per_call, help="train steps per host call")
    p.add_argument("--eval-every", type=int, default=D.eval_every,
                   help="every N epochs score --eval-count fixed-seed samples against the -v data (else against "
                        "training grids held back for it): metrics.jsonl, quality/* in TensorBoard, "
                        "checkpoints/best.npz for the best 1-NNA (0 = off)")
    p.add_argument("--eval-count", type=int, default=D.eval_count,
                   help="samples per --eval-every evaluation (and reference shapes, at most)")
    p.add_argument("--out", default=D.out, help="folder holding the run folders")
    p.add_argument("--keep", type=int, default=D.keep, help="numbered checkpoints to keep (0 = all)")
    p.add_argument("--deterministic", action="store_true", help="deterministic TensorFlow ops (slower; exact reruns)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars (summary lines only)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    values = vars(args)
    if args.preset:
        values, given = apply_preset(args.preset, values, given)

    def train():
        from tf3dgan.training.loop import fit  # TensorFlow loads only after the settings, run and data are checked

        fit(TrainConfig(**values), given=given)

    return run_tool(train, needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
