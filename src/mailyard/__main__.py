from mailyard.cli import main

main()
