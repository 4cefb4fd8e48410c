"""What a multi-worker trial holds, how many fit at once, and what a cluster can hold of them."""
from __future__ import annotations

import pytest

from tuner.core.sweep_config import SweepConfig
from tuner.driver.preflight import _worker_slots
from tuner.driver.sweep_build import trial_demand


def test_a_trial_holds_its_workers_and_a_tenth_of_a_cpu_for_itself():
    assert trial_demand(SweepConfig(cpus_per_trial=2, gpus_per_trial=0.5)) == {"CPU": 2, "GPU": 0.5}
    assert trial_demand(SweepConfig(workers_per_trial=4, cpus_per_worker=2, gpus_per_worker=1)) == {"CPU": 8.1, "GPU": 4}
    # a multi-worker trial's workers default to the per-trial resources
    assert trial_demand(SweepConfig(workers_per_trial=2, cpus_per_trial=3)) == {"CPU": 6.1, "GPU": 0}


def test_worker_slots_count_each_node_by_what_its_cpus_and_gpus_both_allow():
    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}, {"CPU": 1.0, "GPU": 4.0}]
    gpu_workers = (("cpus_per_worker", "CPU", 1.0), ("gpus_per_worker", "GPU", 1.0))
    assert _worker_slots(nodes, 0, gpu_workers) == 2 + 1  # GPUs bind the second node, CPUs the third
    assert _worker_slots(nodes, 2, gpu_workers) == 2 + 0  # the trial's 0.1 CPU leaves the third node 0.9
    cpu_workers = (("cpus_per_worker", "CPU", 1.0), ("gpus_per_worker", "GPU", 0.0))
    assert _worker_slots(nodes, 1, cpu_workers) == 2 + 7 + 1


@pytest.mark.slow
def test_as_many_multi_worker_trials_run_at_once_as_the_cluster_holds():
    from tests._helpers import local_ray
    from tuner.driver.sweep_build import max_concurrent

    with local_ray():  # 2 CPUs
        assert max_concurrent(SweepConfig(workers_per_trial=2, cpus_per_worker=0.5)) == 1  # 1.1 CPUs a trial
        assert max_concurrent(SweepConfig(workers_per_trial=2, cpus_per_worker=0.45)) == 2  # 1.0
        assert max_concurrent(SweepConfig(cpus_per_trial=1)) == 2
        # with --address the nodes are only known once Ray is up: the same rule over ray.nodes()
        from tuner.core.config import ConfigError
        from tuner.driver.preflight import check_fits

        check_fits(SweepConfig(cpus_per_trial=2))
        with pytest.raises(ConfigError, match=r"^cpus_per_trial: 3 is more than any node of the cluster has \(2 CPUs\); "
                                              r"allowed: \(0, 2\]$"):
            check_fits(SweepConfig(cpus_per_trial=3))


def test_a_cluster_is_refused_by_its_largest_node_and_a_machine_by_itself():
    from tuner.core.config import ConfigError
    from tuner.driver.preflight import _check_nodes

    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    _check_nodes(SweepConfig(cpus_per_trial=8, gpus_per_trial=2), nodes, "any node of the cluster has")
    with pytest.raises(ConfigError, match=r"^gpus_per_trial: 3 is more than any node of the cluster has \(the largest "
                                          r"has 2 GPUs\); allowed: \[0, 2\]$"):
        _check_nodes(SweepConfig(gpus_per_trial=3), nodes, "any node of the cluster has")
    with pytest.raises(ConfigError, match=r"^workers_per_trial: 3 workers \(3 CPUs, and 0.1 CPU for the trial\) do not "
                                          r"fit this machine, which holds 1 such workers at once; allowed: \[1, 1\]$"):
        _check_nodes(SweepConfig(workers_per_trial=3, cpus_per_worker=1), [{"CPU": 2.0}], "this machine has")
