"""BEiT's masked image modeling (``vitzoo pretrain``): block masks, the two views, the targets, the task."""
