// kesd (placeholder until its issue lands).
process.stderr.write('kesd: not built yet\n');
process.exit(2);
