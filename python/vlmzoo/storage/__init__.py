"""Files written whole or not at all (atomic), and the user cache of what vlmzoo trains for itself."""
