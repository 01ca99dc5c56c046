"""The report sections: one module per section of ``report.md``, each registering itself in
`advbridge.evaluations.reports.section.SECTIONS` with the rank that fixes its place (summary 10, attack tables 20,
defenses 30, Kos 40, JSMA hardness 50, mean field 52, power law 54, transfer 60, paper vs ours 70, backends 80,
sanity flags 90, failed cells 95, plot list 100). Sections never import each other."""
