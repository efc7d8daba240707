"""Reading TensorBoard event files back as TensorBoard itself does."""

import pathlib

from tensorboard.backend.event_processing import event_accumulator


def read(folder) -> event_accumulator.EventAccumulator:
    """Every event file of one run folder (e.g. ``<workdir>/tensorboard``), loaded."""
    assert list(pathlib.Path(folder).glob("events.out.tfevents.*")), f"no event file in {folder}"
    events = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}
    )
    return events.Reload()


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of a run folder."""
    events = read(folder)
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def image_tags(folder) -> list[str]:
    return read(folder).Tags()["images"]
