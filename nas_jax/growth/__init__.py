"""Growth methods: search by growing trained networks into children (Petridish).

They fit neither ask/tell (a child starts from its parent's weights, and what
is grown next depends on a frontier of error against cost) nor the one-shot
protocol; the runner runs them with its ``growth`` loop
(``nas_jax.runner.growth``).
"""
