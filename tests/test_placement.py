"""blfsd.master.placement: the master's decisions about data, without I/O."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from blfsd.errors import Conflict, ConnectionClosed, UsageError
from blfsd.master import placement
from blfsd.messages import JobSpec, JobState, Split


def spec(output: str = "/out", output_name=None, datasets=()) -> JobSpec:
    return JobSpec(name="j", job_file="j.py", source="", job_class="J", args=[],
                   input_format="lines", splits=[Split(path="/in", start=0, end=1)],
                   output=output, output_name=output_name, datasets=list(datasets))


# ------------------------------------------------------------------ where a put's splits go

def test_roomiest_first_orders_by_free_space_then_name():
    assert placement.roomiest_first({"w2": 10, "w1": 10, "w3": 99, "w0": None}) == \
        ["w3", "w1", "w2", "w0"]
    assert placement.roomiest_first({}) == []


def test_splits_go_round_robin_over_the_workers_in_that_order():
    assert placement.split_nodes(["w3", "w1"], 5) == [["w3"], ["w1"], ["w3"], ["w1"], ["w3"]]
    assert placement.split_nodes(["w3", "w1", "w2"], 2) == [["w3"], ["w1"]]  # emptiest disks


def test_replicas_go_to_different_workers_each_the_next_one():
    assert placement.split_nodes(["w3", "w1", "w2"], 4, replicas=2, disks=3) == \
        [["w3", "w1"], ["w1", "w2"], ["w2", "w3"], ["w3", "w1"]]
    every = placement.split_nodes(["a", "b", "c"], 7, replicas=3, disks=3)
    assert all(sorted(nodes) == ["a", "b", "c"] for nodes in every)
    assert [nodes[0] for nodes in every] == ["a", "b", "c", "a", "b", "c", "a"]


def test_more_replicas_than_disks_is_refused_in_one_line():
    with pytest.raises(UsageError, match="cannot keep 4 replicas of each split: the "
                                         "cluster has 3 disks") as e:
        placement.split_nodes(["w0", "w1", "w2"], 5, replicas=4, disks=3)
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="at least 1"):
        placement.split_nodes(["w0"], 5, replicas=0, disks=1)


def test_replicas_need_that_many_connected_workers_when_the_disks_are_there():
    with pytest.raises(ConnectionClosed, match="2 replicas need 2 connected workers; 1 are"):
        placement.split_nodes(["w0"], 5, replicas=2, disks=3)


def test_a_put_needs_a_connected_worker():
    with pytest.raises(ConnectionClosed, match="no worker is connected"):
        placement.split_nodes([], 3)


# ------------------------------------------------------------------ default reducers

@pytest.mark.parametrize("asked,configured,alive,want", [
    (7, 3, 2, 7),  # the job's own count (--reducers or the class attribute)
    (None, 3, 2, 3),  # [master] reducers
    (None, 0, 4, 4),  # one per live worker
    (None, 0, 0, 1),  # at least one, with no worker up yet
    (0, 0, 2, 2),
])
def test_default_reducers(asked, configured, alive, want):
    assert placement.default_reducers(asked, configured, alive) == want


# ------------------------------------------------------------------ output conflicts

def test_a_free_output_passes():
    placement.check_output(spec(), recorded=False, has_success=False,
                           live_outputs=[("other", "/elsewhere")])
    placement.check_output(spec("counts", "counts"), recorded=False, has_success=True,
                           live_outputs=[])  # a name is not a directory: _SUCCESS is moot


def test_a_recorded_cluster_output_is_taken():
    with pytest.raises(Conflict, match="output counts already exists"):
        placement.check_output(spec("counts", "counts"), True, False, [])
    # a directory whose name happens to be recorded as a cluster output is not
    placement.check_output(spec("/counts"), True, False, [])


def test_a_finished_output_directory_is_taken():
    with pytest.raises(Conflict, match="already holds a finished job's _SUCCESS"):
        placement.check_output(spec(), False, True, [])


def test_an_output_an_unfinished_job_writes_is_taken():
    with pytest.raises(Conflict, match="job j1 is already writing to /out"):
        placement.check_output(spec(), False, False, [("j0", "/x"), ("j1", "/out")])


def test_dataset_names_are_taken_while_stored_or_being_put():
    placement.check_dataset_name("d", stored=False, putting=False)
    for stored, putting in ((True, False), (False, True)):
        with pytest.raises(Conflict, match="dataset 'd' already exists"):
            placement.check_dataset_name("d", stored, putting)


# ------------------------------------------------------------------ in use

def job(job_id: str, state: JobState, **kw) -> SimpleNamespace:
    return SimpleNamespace(id=job_id, state=state, spec=spec(**kw))


def test_a_dataset_or_output_is_in_use_while_an_unfinished_job_has_it():
    jobs = [job("done", JobState.SUCCEEDED, datasets=["d"]),
            job("reads", JobState.RUNNING, datasets=["a", "d"]),
            job("writes", JobState.QUEUED, output="o", output_name="o")]
    assert placement.user_of("d", jobs) == "reads"
    assert placement.user_of("o", jobs) == "writes"
    assert placement.user_of("a", jobs[:1]) is None
    assert placement.user_of("free", jobs) is None
    assert placement.user_of("d", [job("c", JobState.COMMITTING, datasets=["d"])]) == "c"


# ------------------------------------------------------------------ who serves a read

def test_the_owner_serves_its_files_first_then_its_peers_through_their_views():
    assert placement.read_plan(["w2"], ["w1", "w2", "w3"]) == [
        ("w2", "w2"), ("w1", "w2"), ("w3", "w2")]


def test_any_connected_worker_serves_them_when_the_owner_is_down():
    assert placement.read_plan(["w2"], ["w3", "w1"]) == [("w3", "w2"), ("w1", "w2")]
    assert placement.read_plan(["w2"], []) == []


def test_each_connected_holder_of_a_copy_comes_before_any_view():
    assert placement.read_plan(["w1", "w2"], ["w2", "w3"]) == [
        ("w2", "w2"), ("w2", "w1"), ("w3", "w1"), ("w3", "w2")]


def test_copies_go_to_the_workers_after_the_writer_in_name_order():
    assert placement.copy_targets("w2", ["w3", "w1", "w2", "w4"]) == ["w3", "w4", "w1"]
    assert placement.copy_targets("w4", ["w1", "w4"]) == ["w1"]
    assert placement.copy_targets("w1", ["w1"]) == []
