"""Pure metric functions: segmentation (Dice, HD95 per region; lesion-wise, by panoptica), detection (AP,
FROC), retrieval (Recall@K, zero-shot accuracy and AUROC). They read no files and know no model."""
