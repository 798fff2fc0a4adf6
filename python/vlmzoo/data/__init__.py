"""Built-in data: the `shapes` and `digits` tasks, their word tokenizer, and image preprocessing."""
from .batching import IGNORE_INDEX, build_prompt, collate
from .example import Example
from .preprocess import CLIP_MEAN, CLIP_STD, NORMALIZATIONS, SIGLIP_MEAN, SIGLIP_STD, images_to_tensor
from .sample_images import SAMPLE_IMAGE_NAMES, sample_image, sample_images
from .tasks import CAPTION_QUESTION, SPLITS, TASKS, Task, TaskSpec, as_task, make_task
from .tokenizer import SPECIAL_TOKENS, WordTokenizer, split_words

__all__ = [
    "CAPTION_QUESTION",
    "CLIP_MEAN",
    "CLIP_STD",
    "Example",
    "IGNORE_INDEX",
    "NORMALIZATIONS",
    "SAMPLE_IMAGE_NAMES",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "SPECIAL_TOKENS",
    "SPLITS",
    "TASKS",
    "Task",
    "TaskSpec",
    "WordTokenizer",
    "as_task",
    "build_prompt",
    "collate",
    "images_to_tensor",
    "make_task",
    "sample_image",
    "sample_images",
    "split_words",
]
