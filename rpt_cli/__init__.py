"""rpt: Reinforcement Pre-Training (arXiv 2506.08007) as composable JSON Lines commands."""

__version__ = "0.1.0"
