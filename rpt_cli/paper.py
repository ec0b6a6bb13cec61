"""The paper's settings (arXiv 2506.08007: Table 5 and Section 3), in one place. Every default that
quotes the paper reads it from here, so a setting changes in one line and the help texts follow."""

PROMPT_TOKENS = 4096  # longest prompt
NEW_TOKENS = 8192  # longest completion (response length)
COMPLETIONS = 8  # G, completions per context
TEMPERATURE = 0.8  # sampling temperature of rollouts
ENTROPY_TOP_K = 16  # the k of the proxy model's top-k entropy
CONTEXTS_PER_STEP = 256  # batch size in contexts
LEARNING_RATE = 1e-6
STEPS = 1000
DYNAMIC_SAMPLING_FROM_STEP = 500
KL_COEFFICIENT = 0.0
CLIP_RATIO = 0.2
WEIGHT_DECAY = 0.01
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
SPLIT_THRESHOLDS = {"easy": 0.5, "medium": 1.0, "hard": 1.5}  # entropy above which a position is in the split
