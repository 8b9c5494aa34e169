"""Train: settings and the run plan (:mod:`.plan`, no TensorFlow needed), the one GAN step algorithm
(:mod:`.algorithm`, ``keras.ops``), the trainer base (:mod:`.trainer`) and its backend adapters
(:mod:`.backends`), the loop (:mod:`.loop`), the run folder and checkpoints (:mod:`.runs`), TensorBoard
(:mod:`.summaries`) and evaluation during training (:mod:`.quality`).

Nothing is imported here, so ``tf3dgan.training.plan`` loads without Keras."""
