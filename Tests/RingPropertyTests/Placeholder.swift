// Property-based ring tests live here (Swift Testing + PropertyBased).
