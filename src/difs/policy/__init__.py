"""The data-in-flight services vocabulary: policies, tiers, capabilities, satisfaction (pure)."""
