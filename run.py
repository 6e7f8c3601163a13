"""Train one configuration (or a sweep with -m). Examples:

    python run.py                                          # toy T=2, GradNorm α=0.12
    python run.py experiment=toy_t10 balancer=equal seed=3
    python run.py -m experiment=toy_t2 balancer=equal,uncertainty,gradnorm seed=0,1,2
    torchrun --nproc_per_node=4 run.py experiment=nyuv2_segnet balancer=gradnorm alpha=1.5
"""

import sys

import hydra

from gradnorm.cli import main as train_main
from gradnorm.cli import preflight, resume_argv, torchrun_worker_argv


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    sys.argv[1:] = resume_argv(sys.argv[1:])  # trainer.resume=RUN_DIR: that run's own overrides and folder
    preflight(sys.argv[1:])
    sys.argv[1:] = torchrun_worker_argv(sys.argv[1:])  # under torchrun only rank 0 writes Hydra's files
    main()
