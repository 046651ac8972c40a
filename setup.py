"""Ships recipes/ inside the wheel, as the package data atss_bench/_recipes, so that an installed
atss-bench finds its recipes, profiles and claims without a checkout (``recipes.BUILTIN_RECIPES``).
Everything else is declared in pyproject.toml."""
from setuptools import find_packages, setup

RECIPES = {"atss_bench._recipes": "recipes", "atss_bench._recipes.profiles": "recipes/profiles",
           "atss_bench._recipes.claims": "recipes/claims"}

setup(
    packages=[*find_packages(include=["atss_bench", "atss_bench.*"]), *RECIPES],
    package_dir=RECIPES,
    package_data={name: ["*.yaml"] for name in RECIPES},
)
