"""Recipe -> cached, verified image: recipes, the build and its processes, the cache, SSH keys."""
