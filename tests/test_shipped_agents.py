"""The agents shipped in `agents/`: every file matches its manifest, the model card's numbers
are its own returns on the evaluation seeds, and the shipped weights replay the card's first
episode exactly (the real game, the agent's own play settings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamjax.agent_io import MANIFEST, load_agent
from dreamjax.pipeline.carracing import cpu_flags
from dreamjax.playback import GAMES, pick_game, play_real

AGENTS = sorted(p.parent for p in (Path(__file__).parent.parent / "agents").glob(f"*/{MANIFEST}"))
EVAL_SEED_START = 1_000_000


def test_the_main_games_ship_an_agent():
    assert {p.name for p in AGENTS} == {"carracing", "doom"}


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_a_shipped_agent_loads_and_its_card_is_its_own_returns(folder):
    agent = load_agent(folder)  # checks every file's sha256 against the manifest
    card = json.loads((folder / "card.json").read_text())
    assert pick_game(agent, None) == card["game"] == folder.name
    returns = np.asarray(card["returns"], np.float64)
    assert card["episodes"] == len(returns) == len(card["seeds"]) == 100
    assert card["seeds"] == list(range(EVAL_SEED_START, EVAL_SEED_START + 100))
    assert card["mean"] == pytest.approx(returns.mean(), abs=1e-9)
    assert card["std"] == pytest.approx(returns.std(), abs=1e-9)
    readme = (folder / "README.md").read_text()
    assert f"{card['mean']:.1f} ± {card['std']:.1f}" in readme


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_a_shipped_agent_replays_its_cards_first_episode(folder):
    """Exactly on a CPU like the cards' (AVX-512). Elsewhere XLA's floats differ in the last
    bits (session 28, an AVX2-only EPYC: CarRacing's first episode 159.1 against the card's
    162.5; Doom's held exactly), so there the replay must be deterministic (twice the same
    episode) and its return within one card std of the card's."""
    agent = load_agent(folder)
    card = json.loads((folder / "card.json").read_text())
    s = agent.settings
    (ep,) = play_real(agent, GAMES[card["game"]], card["seeds"][:1], max_steps=s.max_steps,
                      workers=1, envs_per_worker=1)
    if "avx512f" in (cpu_flags() or ()) or card["game"] == "doom":
        assert ep.total_reward == card["returns"][0]
        assert ep.length == card["lengths"][0]
        return
    (again,) = play_real(agent, GAMES[card["game"]], card["seeds"][:1],
                         max_steps=s.max_steps, workers=1, envs_per_worker=1)
    assert (again.total_reward, again.length) == (ep.total_reward, ep.length)
    assert abs(ep.total_reward - card["returns"][0]) <= card["std"]
