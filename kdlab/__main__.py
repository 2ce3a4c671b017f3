from kdlab.cli.main import main

main()
