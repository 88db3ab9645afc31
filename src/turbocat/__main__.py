from turbocat.cli.main import main

main()
