"""Second stage of the shipped multi-focus weights: fine-tuning with BatchNorm frozen.

    python -m train.main --config train/configs/multifocus.py --workdir runs/mf
    python -m train.precise_bn --config train/configs/multifocus.py --model runs/mf/model \\
        --out runs/mf/model-precise-bn --batches 200
    python -m train.main --config train/configs/multifocus_finetune.py --workdir runs/mf-ft

The first stage trains with batch statistics (as the paper); its BatchNorm running
averages lag the weights, and precise BN re-estimates them with the final weights.
This stage starts from that model and trains on with BatchNorm normalising by those
fixed statistics, as at inference, so the weights adapt to the statistics the model is
used with. On the dev split this took the held-out PSNR from 37.8 dB (the same steps
with batch statistics, then precise BN) to 39.8 dB (docs/training_notes.md, "frozen
BatchNorm"). The exported ``runs/mf-ft/model`` is the shipped ``ifcnn-jax-mf``.
"""

from train.configs import multifocus


def get_config():
    config = multifocus.get_config()
    config.name = "multifocus_finetune"
    config.init_model = "runs/mf/model-precise-bn"  # every parameter and statistic from stage 1
    config.batch_norm = "frozen"
    config.learning_rate = 3e-4
    config.warmup_steps = 50
    config.num_train_steps = 2_000
    return config
