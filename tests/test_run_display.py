"""What `radpipe run` shows of kfp.local's output, fed the lines of a real run (pipelines/run_display.py).

The pipeline end to end (tests/test_e2e_local.py) checks the same through the real kfp.local; here each
level of detail is checked line by line, quickly.
"""

from __future__ import annotations

import io
import logging

from radpipe.pipelines.run_display import LineWriter, RootRecords, RunDisplay

# As kfp.local 2.17.0 prints them: its own records (colours included), then a task's, indented.
RUN = [
    "\x1b[96m15:45:21.180 - INFO - Executing task \x1b[96m'ingest'\x1b[0m",
    '    [KFP Executor 2026-12-03 15:45:21,291 INFO]: Loading KFP component "ingest" from /tmp/x.py',
    "    [KFP Executor 2026-12-03 15:45:21,293 INFO]: Got executor_input:",
    "    {",
    '        "inputs": {}',
    "    }",
    "    [KFP Executor 2026-12-03 15:45:22,354 INFO]: progress ingest: reading images: 13/26 files",
    "    [KFP Executor 2026-12-03 15:45:22,383 INFO]: progress ingest: reading images: 26/26 files",
    "    [KFP Executor 2026-12-03 15:45:22,384 WARNING]: ingest: 6 groups (scans) have images in two splits",
    "    [KFP Executor 2026-12-03 15:45:22,390 WARNING]: 5 out of the last 22 calls triggered tf.function retracing",
    "    [KFP Executor 2026-12-03 15:45:22,400 INFO]: ingest: found 26 image files under data",
    "2026-12-03 15:45:23.1 I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.",
    "15:45:41.834 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "15:45:41.846 - INFO - Executing task 'train'",
    "    [KFP Executor 2026-12-03 15:45:50,000 ERROR]: train: the weights file is corrupt",
    "15:45:51.000 - ERROR - Task 'train' finished with status FAILURE",
    # kfp's symptom of a failure it missed (its DockerRunner counts a container removed before its wait as a
    # success): the closing error of `radpipe run` gives the failed task's own message instead.
    "15:45:51.100 - ERROR - Task for-loop-1-iteration-0 failed with exception: Tried to get output 'dataset' from "
    "task 'ingest', but task 'ingest' not found.",
]


def shown(level: int) -> tuple[list[str], str, RunDisplay]:
    log, terminal = io.StringIO(), io.StringIO()
    with RunDisplay(log, terminal, level) as display, LineWriter(display) as writer:
        for line in RUN:
            writer.write(line[: len(line) // 2])  # lines arrive in pieces, too
            writer.write(line[len(line) // 2 :] + "\n")
    return terminal.getvalue().splitlines(), log.getvalue(), display


def test_by_default_a_line_per_stage_and_radpipes_warnings_and_errors() -> None:
    lines, log, display = shown(logging.WARNING)
    assert lines == [
        "ingest ...",
        "warning: ingest: 6 groups (scans) have images in two splits",
        "ingest done in 0 s",
        "train ...",
        "error: train: the weights file is corrupt",
        "train FAILED in 0 s",
    ]
    assert [name for name, _ in display.finished] == ["ingest", "train"]
    # The log file has every line, without kfp's colours.
    assert log.splitlines() == [
        line.replace("\x1b[96m", "").replace("\x1b[92m", "").replace("\x1b[0m", "") for line in RUN
    ]


def test_verbose_adds_the_tasks_records_and_progress_but_not_kfps_executor_input() -> None:
    lines, _, _ = shown(logging.INFO)
    assert "ingest: found 26 image files under data" in lines
    assert "ingest: reading images 26/26 files" in lines
    assert "warning: ingest: 5 out of the last 22 calls triggered tf.function retracing" not in lines
    assert "5 out of the last 22 calls triggered tf.function retracing" in lines  # a library's warning: detail
    assert not any("executor_input" in line or '"inputs"' in line for line in lines)


def test_debug_shows_every_line() -> None:
    lines, _, _ = shown(logging.DEBUG)
    assert '"inputs": {}' in "\n".join(lines) and "oneDNN custom operations" in "\n".join(lines)


def test_root_logger_records_during_a_run_go_through_the_display() -> None:
    """kfp.local's orchestrator calls ``logging.error`` for a failed loop task: to the log, not the terminal
    (the closing error says why); any other root record is shown as the display shows kfp's."""
    log, terminal, caught = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(caught)  # what the CLI's handler would print
    logging.getLogger().addHandler(handler)
    try:
        with RunDisplay(log, terminal, logging.WARNING) as display, RootRecords(display):
            logging.error("Task for-loop-1-iteration-0 failed with exception: task 'ingest' not found.")
            logging.error("something else broke")
            logging.getLogger("radpipe.x").error("train: a radpipe record")  # not the root logger's: as before
        logging.error("after the run")
    finally:
        logging.getLogger().removeHandler(handler)
    assert terminal.getvalue().splitlines() == ["error: something else broke"]
    assert "ERROR - Task for-loop-1-iteration-0 failed with exception" in log.getvalue()
    assert caught.getvalue().splitlines() == ["train: a radpipe record", "after the run"]
