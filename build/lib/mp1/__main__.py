from mp1.cli import main

main()
