"""Planning: from a dataset fingerprint to named plans (spacing, patch, network, batch)."""

from voxseg.planning.memory import check_memory_estimate, gpu_training_bytes, training_flops
from voxseg.planning.planner import PlannerOptions, default_device, plan_dataset
from voxseg.planning.plans import ConfigurationPlan, Plans, read_plans, write_plans

__all__ = [
    "ConfigurationPlan",
    "PlannerOptions",
    "Plans",
    "check_memory_estimate",
    "default_device",
    "gpu_training_bytes",
    "plan_dataset",
    "read_plans",
    "training_flops",
    "write_plans",
]
