from hmgen.cli import main

main()
