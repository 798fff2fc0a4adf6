"""BEiT-3 (torchscale layout): checkpoint conversion both ways from one key table; the built-in tasks
as VQA classification."""
from .layout import (config_from_torchscale, encoder_config_of, from_torchscale, head_of, is_torchscale_folder,
                     load_torchscale_folder, to_torchscale)
from .processor import Beit3Processor
from .task import answer_set, task_overrides, train_vqa, vqa_accuracy, vqa_batches

__all__ = ["Beit3Processor", "answer_set", "config_from_torchscale", "encoder_config_of", "from_torchscale", "head_of",
           "is_torchscale_folder", "load_torchscale_folder", "task_overrides", "to_torchscale", "train_vqa",
           "vqa_accuracy", "vqa_batches"]
