"""Processes launched together by Slurm (`srun`) or Open MPI (`mpirun`), read from their environment variables
(faked here; no Slurm is started): one training together under a distribution, else one refusing line."""

from __future__ import annotations

import pytest

from dlrun.cluster import SLURM, Processes, check_one_run, initialize_arguments, processes
from dlrun.errors import RecipeError
from tests.conftest import write_recipe

LAUNCHERS = [*SLURM, "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri",
             "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID", "KERAS_DISTRIBUTION_JOB_ADDRESSES"]  # fmt: skip


def slurm(tasks: int, rank: int = 0) -> dict[str, str]:
    """What `srun --ntasks TASKS` gives task RANK (the variables jax.distributed's Slurm detection reads)."""
    return {"SLURM_JOB_ID": "81", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": str(tasks),
            "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0"}  # fmt: skip


@pytest.fixture
def launched(monkeypatch):
    """Set a launcher's variables (after clearing any the test machine has)."""
    for name in LAUNCHERS:
        monkeypatch.delenv(name, raising=False)

    def launch(variables: dict[str, str]) -> Processes:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return processes()

    return launch


def test_no_launcher_is_one_process(launched):
    assert launched({}) == Processes(1, 0, "", "")
    assert check_one_run(None).count == 1


def test_slurm_with_one_task_trains_alone(launched):
    found = launched(slurm(1))
    assert (found.count, found.rank, found.launcher) == (1, 0, "slurm")
    assert check_one_run(None) == found  # no distribution asked, none needed: an ordinary run


def test_slurm_with_two_tasks_trains_together_under_data_parallel(launched):
    found = launched(slurm(2, rank=1))
    assert (found.count, found.rank, found.launcher) == (2, 1, "slurm")
    assert check_one_run("data_parallel") == found
    assert initialize_arguments(found) == {}  # jax.distributed's own Slurm detection finds coordinator and ids


def test_slurm_with_two_tasks_and_no_distribution_is_refused(launched):
    launched(slurm(2))
    with pytest.raises(RecipeError, match=r"SLURM_NTASKS=2 says 2 processes .* set `train.distribute: data_parallel`"):
        check_one_run(None)
    with pytest.raises(RecipeError, match="mirrored"):
        check_one_run("mirrored")


def test_a_batch_script_without_srun_is_one_process(launched):
    """sbatch sets SLURM_NTASKS for the job, but its script runs once: without a step node list, one process."""
    variables = slurm(4)
    del variables["SLURM_STEP_NODELIST"]
    assert launched(variables).count == 1


def test_open_mpi_and_keras_variables(launched, monkeypatch):
    found = launched({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})
    assert (found.count, found.rank, found.launcher) == (2, 1, "ompi")
    with pytest.raises(RecipeError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        initialize_arguments(found)  # Open MPI 5 gives JAX no coordinator: the user names it
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234")
    assert initialize_arguments(found) == {"job_addresses": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.0.0.1:34911")
    assert initialize_arguments(found) == {}  # Open MPI 4's mpirun: JAX finds the coordinator itself
    found = launched({"KERAS_DISTRIBUTION_NUM_PROCESSES": "3", "KERAS_DISTRIBUTION_PROCESS_ID": "2"})
    assert (found.count, found.rank, found.launcher) == (3, 2, "keras")  # Keras' own variables come first


RECIPE = """
name: lone
data:
  source: npz
  path: missing.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y}}
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: y, type: Dense, units: 1}
compile: {optimizer: adam, loss: mse}
train:
  epochs: 1
"""


@pytest.mark.parametrize(
    ("variables", "source"),
    [(slurm(2), "Slurm's SLURM_NTASKS=2"), ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI's OMPI_COMM_WORLD_SIZE=2")],
    ids=["slurm", "open-mpi"],
)
def test_several_processes_without_distribution_stop_with_one_line(cli, tmp_path, monkeypatch, variables, source):
    """Each of N launched processes would have trained its own copy: the first line says what to set."""
    for name in LAUNCHERS:
        monkeypatch.delenv(name, raising=False)
    recipe = write_recipe(tmp_path, RECIPE)
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), env={"KERAS_BACKEND": "jax", **variables})
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {recipe}:14:3: train: {source} says 2 processes run this command"), lines
    assert "set `train.distribute: data_parallel`" in lines[0]
    assert not (tmp_path / "runs").exists()
