"""supplychain/vulns"""
