"""Training and evaluation engine: configs, checkpoints, DDP, run scaffolding, retraining, COCO evaluation."""
from ..checkpoint import load_checkpoint, save_checkpoint
from .config import DEFAULTS, load_config
from .evaluate import coco_evaluate, evaluate
from .run import TrainingRun
from .train import retrain

__all__ = ['DEFAULTS', 'load_config', 'load_checkpoint', 'save_checkpoint', 'coco_evaluate', 'evaluate', 'TrainingRun',
           'retrain']
