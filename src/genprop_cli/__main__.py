from genprop_cli.cli import main

main()
