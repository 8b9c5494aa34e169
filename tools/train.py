#!/usr/bin/env python3
"""Train a 3D voxel GAN (64-3D-RaSGAN by default): the original 64-3D-RaSGan.py flags, plus more.

Example: python tools/train.py -n chair-1 -e 2500 -b 24 -glr 0.0025 -dlr 0.00003
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.choices import ARCHS, D_RULES, GRAPH_STYLES, IMPLEMENTATIONS, OBJECTIVES, OUTPUT_ACTIVATIONS, PRECISIONS, STRATEGIES
from tf3dgan.cli import HelpFormatter, explicit_flags, run_tool
from tf3dgan.training.plan import TrainConfig

D = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a 3D voxel GAN (64-3D-RaSGAN / 3D-GAN) on voxel grids. "
                                            "Resuming (-l) takes every setting from the run's config.json; a flag "
                                            "given with -l changes that setting (each change is announced).",
                                formatter_class=HelpFormatter)
    p.add_argument("-n", "--name", default=D.name, help="name of the run: outputs go to <out>/<name>/")
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
    p.add_argument("--loss", default=D.loss, choices=OBJECTIVES, help="GAN objective")
    p.add_argument("--d-rule", default=None, choices=D_RULES,
                   help="when to train D: ratio (2*D_smooth > G_smooth, the RaSGAN seed), accuracy (D accuracy <= 0.8, "
                        "3D-GAN), always [default: ratio for rasgan/rsgan, accuracy for minimax/sgan, always for wgan-gp]")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="[default: mixed_float16 when a GPU is visible, else float32]")
    p.add_argument("--lr-schedule", default=None,
                   help="per-epoch learning rates 'EPOCH:GLR/DLR,...' (e.g. the seed's chair run "
                        "'0:0.002/0.00005,300:0.005/0.00005,1200:0.007/0.00003,1600:0.008/0.00001') or a JSON file")
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

    def train():
        from tf3dgan.training.loop import fit  # TensorFlow loads only after the settings, run and data are checked

        fit(TrainConfig(**vars(args)), given=given)

    return run_tool(train, needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
