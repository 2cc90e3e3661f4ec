// mountctl (placeholder until its issue lands).
process.stderr.write('mountctl: not built yet\n');
process.exit(2);
