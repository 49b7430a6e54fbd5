"""Life of open-loop patrols in the real TakeCover (ViZDoom), 16 episodes per period.

usage: python patrol_real.py PERIOD [PERIOD ...]   (0: nothing held)

A patrol of period P plays RIGHT for P // 2 steps, then LEFT and RIGHT for P steps each in
turn, whatever the frames show (`dreamjax.pipeline.doom.patrol_schedule`). Env seeds 3000-3015
(training side, never the evaluation seeds 1,000,000+). The game is rendered at 160x120: the
frame does not change what an open-loop policy does, and the game's logic is the same at
every resolution.
"""

import os
import sys

import numpy as np
import vizdoom

from dreamjax.pipeline.doom import patrol_schedule


def main() -> None:
    game = vizdoom.DoomGame()
    game.load_config(os.path.join(vizdoom.scenarios_path, "take_cover.cfg"))
    game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
    game.set_window_visible(False)
    game.set_episode_timeout(2100)
    game.init()
    for period in map(int, sys.argv[1:]):
        acts = patrol_schedule(period, 2100)[:, 0] if period else np.zeros(2100, np.float32)
        lives = []
        for ep in range(16):
            game.set_seed(3000 + ep)
            game.new_episode()
            t = 0
            while not game.is_episode_finished():
                a = acts[min(t, 2099)]
                game.make_action([float(a < -0.3333), float(a > 0.3333)], 1)
                t += 1
            lives.append(t)
        print(f"period {period}: {np.mean(lives):.1f} ± {np.std(lives):.1f}  {sorted(lives)}",
              flush=True)
    game.close()


if __name__ == "__main__":
    main()
