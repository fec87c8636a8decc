import argparse
def main():
    p = argparse.ArgumentParser(description="stub")
    p.add_argument("name")
    p.parse_args()
