"""The analysis side: reads run files only, never live objects; needs neither torch nor MPI."""
