from rpt_cli.cli import main

main()
