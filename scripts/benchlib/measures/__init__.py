"""The measures, one module each, as methods mixed into one Bench (they share its session:
scratch directories, fixtures, sampling and rows)."""

from ..session import Session
from .concurrent import ConcurrencyMeasures
from .exec import ExecMeasures
from .instance import InstanceMeasures
from .lifecycle import LifecycleMeasures
from .ocisif import OciSifMeasures
from .pull import PullMeasures
from .unpack import UnpackMeasures


class Bench(Session, ExecMeasures, UnpackMeasures, PullMeasures, LifecycleMeasures, ConcurrencyMeasures,
            InstanceMeasures, OciSifMeasures):
    """One run of the bench with every measure."""

    def steps(self):
        """(name for --only, method, arguments), in the order they run."""
        from ..config import TEST_USER

        return [
            ("warm-exec", self.warm_exec, ()),
            ("warm-exec-user", self.warm_exec, (TEST_USER,)),
            ("cold-unpack", self.cold_unpack, ()),
            ("warm-unpack", self.warm_unpack, ()),
            ("pull", self.pull, ()),
            ("lifecycle", self.lifecycle, ()),
            ("concurrent", self.concurrent, ()),
            ("sif", self.sif, ()),
            ("instance", self.instance, ()),
            ("oci-sif-write", self.oci_sif_write, ()),
        ]
