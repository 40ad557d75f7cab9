"""Instrument reassignment by role reaches every GM program, so every instrument a prompt may name has
trained note rows (issue 12, section 1)."""

from __future__ import annotations

import random

from midilm.codecs.amt.vocab import DUR_OFFSET, NOTE_OFFSET
from midilm.train import augment as A

# the programs with no note in the training split of the 2026-12-02 dataset (docs/t2m_training.md), by name
UNPLAYED = {"Glockenspiel", "Marimba", "Dulcimer", "Reed Organ", "Accordion", "Harmonica", "Muted Trumpet",
            "English Horn", "Lead 3 (calliope)", "Lead 4 (chiff)", "Pad 7 (halo)", "FX 6 (goblins)", "Shamisen",
            "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell", "Woodblock", "Melodic Tom", "Breath Noise",
            "Telephone Ring", "Helicopter"}


def test_every_program_without_training_notes_is_in_a_role_pool():
    from midilm.music.gm import program_name

    pooled = {p for pool in A.ROLE_POOLS.values() for p in pool}
    assert {program_name(p) for p in A.UNPLAYED_PROGRAMS} == UNPLAYED
    assert set(A.UNPLAYED_PROGRAMS) <= pooled
    for pool in A.ROLE_POOLS.values():
        assert len(pool) == len(set(pool)) and all(0 <= p < 128 for p in pool)


def test_reassignment_draws_the_new_programs():
    # a two-part piece: melody (program 40, high) over bass (33, low); many seeded draws reach every program
    # of the melody pool, the fiddle included
    events = []
    for i in range(8):
        events += [i * 50, DUR_OFFSET + 40, NOTE_OFFSET + 128 * 40 + 76]  # melody, program 40
        events += [i * 50, DUR_OFFSET + 40, NOTE_OFFSET + 128 * 33 + 36]  # bass, program 33
    rng = random.Random(0)
    drawn = set()
    for _ in range(2000):
        _, mapping = A.reassign_instruments(events, rng)
        assert mapping[33] in A.ROLE_POOLS["bass"]
        drawn.add(mapping[40])
    assert drawn == set(A.ROLE_POOLS["melody"]) and 110 in drawn
