"""Pure statistics for process monitoring: univariate SPC (`spc`, `rules`, `capability`) and
multivariate SPC (`mspc`). No I/O, no database; services call these."""
