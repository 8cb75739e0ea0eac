"""``hydra/launcher=packed``: a sweep's runs that differ only in seed train as one packed model.

``ferbench run -m hydra/launcher=packed seed=0,1,2,3,4 attn=none,cbam`` trains two packs (one per attention
choice), each holding the five seeds and all their folds, then runs every job as the basic launcher does: each
finds its record complete and reports it, so summaries, exit status and a sweep's failed runs behave as in any
sweep. A run the pack could not train (another process holds it, its model cannot be packed) is trained by its
own job. Packing follows ``trainer.pack`` (on a CPU, ``auto`` does not pack: set ``trainer.pack=K``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf, open_dict


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.ferbench_packed_launcher.packed_launcher.PackedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="packed_plugin", node=PackedLauncherConf, provider="ferbench")


class PackedLauncher(BasicLauncher):
    """The basic launcher, after one pass that trains each seed group of the sweep as packs (``run_many``)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ferbench.run import run_many

        assert self.hydra_context is not None and self.config is not None
        configs = [self._job_config(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        run_many(configs)  # errors stay in the records (failed.json); each job below reports its own
        return super().launch(job_overrides, initial_job_idx)

    def _job_config(self, overrides: list[str], idx: int) -> DictConfig:
        """The config a job's task function would get: its sweep config, resolved, without the ``hydra`` node."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        resolved = OmegaConf.to_container(sweep_config, resolve=True)
        resolved.pop("hydra", None)
        return OmegaConf.create(resolved)
